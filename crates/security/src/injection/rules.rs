//! The rule set as data: lexicons of phrases, raw-text patterns and weighted
//! sequence rules, written in a small line-based language.
//!
//! ```text
//! # comment
//! lex IGNORE: ignore, disregard, pay no attention to, vergiss, 忽略
//! lex INSTR: instruction*, rules, guidelines        # `*`: prefix match
//! pattern CHATML: (?i)<\|im_(?:start|end)\|>
//! gate CHATML: <|
//! rule override.ignore_prior override 1.2: @IGNORE ~4 @PRIOR ~3 @INSTR
//! rule leak.verbatim leak 0.4: repeat|print ~6 verbatim|word for word
//! ```
//!
//! * `lex NAME: a, b, c*` adds phrases to a concept. Phrases are normalised like
//!   the scanned text (so they are case-, width- and accent-insensitive) and match
//!   whole words; a trailing `*` makes the last word a prefix. Repeating a `lex`
//!   line for the same name extends the concept.
//! * `pattern NAME: REGEX` makes a concept from a regular expression run over the
//!   raw input bytes (for markup such as chat-template tokens or markdown
//!   images). Patterns are ASCII regexes (`(?-u)` is implied; write `(?u:…)`
//!   for Unicode classes). `gate NAME: a ; b ; c` lists substrings of which one
//!   must occur (ASCII case-insensitive) before the pattern runs at all, which
//!   keeps ordinary text on the fast path. A pattern whose every alternative
//!   begins with one of its gates (`(?i)(?:curl|wget)\s…` gated by `curl ;
//!   wget`) is then tried only where its gates occur, and one anchored at
//!   line starts (`(?m)^…`, `(?:^|\n)…`) only at line starts, instead of
//!   searched for through the text (a window with more than 16 such places is
//!   searched through, as any other pattern is). Comments are not recognised on
//!   `pattern` and `gate` lines, so both may contain `#`.
//! * `rule NAME FAMILY WEIGHT: E1 ~N E2 ~M E3 …` matches when the elements occur
//!   in order with at most `N` words between consecutive ones. An element is
//!   `@CONCEPT`, a literal phrase, or alternatives separated by `|`. A rule adds
//!   its weight (which may be negative, to dampen benign contexts) once per scan.
//!   Redefining a rule name replaces the rule. A rule of the family
//!   `discussion` also marks its window as one that discusses what it quotes:
//!   there, positive hits inside double quotes count at half weight.

use serde::{Deserialize, Serialize};

use crate::error::SecurityError;

/// The rule set compiled into every default detector.
pub const BUILTIN_RULES: &str = include_str!("../../rules/default.rules");

/// Phrases that make up one concept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LexiconDef {
    /// Concept name, referred to as `@NAME` in rules.
    pub name: String,
    /// Phrases; a trailing `*` makes the last word a prefix.
    pub entries: Vec<String>,
}

/// A concept found by a regular expression over the raw input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternDef {
    /// Concept name, referred to as `@NAME` in rules.
    pub name: String,
    /// The regular expression (`regex` crate syntax, linear time), run over the
    /// input bytes with `(?-u)` implied.
    pub regex: String,
    /// Substrings (ASCII case-insensitive) of which one must occur before the
    /// regex runs; empty: always run.
    #[serde(default)]
    pub gates: Vec<String>,
}

/// One element of a rule: any of its alternatives matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementDef {
    /// `@CONCEPT` names or literal phrases.
    pub alternatives: Vec<String>,
    /// Most words allowed between the previous element and this one (0 for the first).
    pub max_gap: u32,
}

/// A weighted sequence rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleDef {
    /// Unique name, reported in matches, e.g. `override.ignore_prior`.
    pub name: String,
    /// Attack family, e.g. `override`, `leak`, `jailbreak`, `exfiltration`.
    pub family: String,
    /// Score added when the rule matches (negative weights dampen).
    pub weight: f32,
    /// The elements, in order.
    pub elements: Vec<ElementDef>,
}

/// A complete rule set: lexicons, patterns and rules. Parse one with
/// [`RuleSet::parse`], start from [`RuleSet::builtin`] and [`merge`](RuleSet::merge)
/// your own, or (de)serialise it with serde.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSet {
    /// Concepts defined by phrases.
    pub lexicons: Vec<LexiconDef>,
    /// Concepts defined by regular expressions.
    pub patterns: Vec<PatternDef>,
    /// The scoring rules.
    pub rules: Vec<RuleDef>,
}

impl RuleSet {
    /// The built-in rule set ([`BUILTIN_RULES`]).
    pub fn builtin() -> Self {
        // Covered by a unit test. Should it ever fail, the detector stays
        // panic-free but inert, so say so loudly.
        Self::parse(BUILTIN_RULES).unwrap_or_else(|error| {
            tracing::error!(%error, "built-in prompt-injection rules do not parse; detection is off");
            Self::default()
        })
    }

    /// Parse a complete rule set; errors name the line, and every `@CONCEPT`
    /// a rule uses must be defined in `text`.
    pub fn parse(text: &str) -> Result<Self, SecurityError> {
        let set = Self::parse_unchecked(text)?;
        set.check_references()?;
        Ok(set)
    }

    /// Parse `text` as an extension of this set (its rules may use this set's
    /// concepts) and merge it in.
    pub fn extend_from_str(&mut self, text: &str) -> Result<(), SecurityError> {
        let other = Self::parse_unchecked(text)?;
        self.merge(other)
    }

    fn parse_unchecked(text: &str) -> Result<Self, SecurityError> {
        let mut set = RuleSet::default();
        // Rule names defined in this text, with their lines: a second
        // definition in one text is a mistake (replacing a rule is what
        // `extend_from_str` is for).
        let mut rule_lines: std::collections::HashMap<String, usize> =
            std::collections::HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let err = |reason: String| SecurityError::Rules {
                line: line_no,
                reason,
            };
            let trimmed = raw.trim_start();
            let line = if trimmed.starts_with("pattern ") || trimmed.starts_with("gate ") {
                raw.trim()
            } else {
                strip_comment(raw).trim()
            };
            if line.is_empty() {
                continue;
            }
            let (head, body) = line
                .split_once(':')
                .ok_or_else(|| err("expected `kind NAME …: body`".into()))?;
            let mut words = head.split_whitespace();
            let kind = words.next().unwrap_or_default();
            let name = words
                .next()
                .ok_or_else(|| err(format!("`{kind}` needs a name")))?
                .to_owned();
            match kind {
                "lex" => {
                    let entries: Vec<String> = body
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if entries.is_empty() {
                        return Err(err(format!("lexicon {name} has no entries")));
                    }
                    set.add_lexicon(LexiconDef { name, entries });
                }
                "pattern" => {
                    let regex = body.trim().to_owned();
                    compile_pattern(&regex).map_err(|e| err(format!("pattern {name}: {e}")))?;
                    set.patterns.push(PatternDef {
                        name,
                        regex,
                        gates: Vec::new(),
                    });
                }
                "gate" => {
                    let gates: Vec<String> = body
                        .split(" ; ")
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect();
                    let pattern = set
                        .patterns
                        .iter_mut()
                        .rev()
                        .find(|p| p.name == name)
                        .ok_or_else(|| err(format!("gate for unknown pattern {name}")))?;
                    pattern.gates = gates;
                }
                "rule" => {
                    let family = words
                        .next()
                        .ok_or_else(|| err(format!("rule {name} needs a family")))?
                        .to_owned();
                    let weight: f32 = words
                        .next()
                        .ok_or_else(|| err(format!("rule {name} needs a weight")))?
                        .parse()
                        .map_err(|e| err(format!("rule {name}: bad weight: {e}")))?;
                    if !weight.is_finite() {
                        return Err(err(format!("rule {name}: weight must be finite")));
                    }
                    let elements = parse_elements(body).map_err(err)?;
                    if let Some(first) = rule_lines.insert(name.clone(), line_no) {
                        return Err(err(format!(
                            "rule {name} is already defined on line {first}"
                        )));
                    }
                    set.add_rule(RuleDef {
                        name,
                        family,
                        weight,
                        elements,
                    });
                }
                other => return Err(err(format!("unknown kind `{other}`"))),
            }
        }
        Ok(set)
    }

    fn add_lexicon(&mut self, def: LexiconDef) {
        match self.lexicons.iter_mut().find(|l| l.name == def.name) {
            Some(existing) => existing.entries.extend(def.entries),
            None => self.lexicons.push(def),
        }
    }

    fn add_rule(&mut self, def: RuleDef) {
        match self.rules.iter_mut().find(|r| r.name == def.name) {
            Some(existing) => *existing = def,
            None => self.rules.push(def),
        }
    }

    /// Add `other`'s lexicon entries, patterns and rules to this set (rules
    /// with the same name are replaced).
    pub fn merge(&mut self, other: RuleSet) -> Result<(), SecurityError> {
        for l in other.lexicons {
            self.add_lexicon(l);
        }
        self.patterns.extend(other.patterns);
        for r in other.rules {
            self.add_rule(r);
        }
        self.check_references()
    }

    /// Check that every `@CONCEPT` used by a rule is defined.
    pub fn check_references(&self) -> Result<(), SecurityError> {
        for rule in &self.rules {
            if super::SCORER_FAMILIES.contains(&rule.family.as_str()) {
                return Err(SecurityError::Rules {
                    line: 0,
                    reason: format!(
                        "rule {}: family {} is reserved for whole-text scorers",
                        rule.name, rule.family
                    ),
                });
            }
            for element in &rule.elements {
                for alt in &element.alternatives {
                    if let Some(concept) = alt.strip_prefix('@') {
                        let known = self.lexicons.iter().any(|l| l.name == concept)
                            || self.patterns.iter().any(|p| p.name == concept);
                        if !known {
                            return Err(SecurityError::Rules {
                                line: 0,
                                reason: format!(
                                    "rule {} refers to unknown concept @{concept}",
                                    rule.name
                                ),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A compiled pattern: the engine behind `regex::bytes::Regex`, used directly
/// so that a scan can also search anchored at chosen positions.
pub(crate) type Pattern = regex_automata::meta::Regex;

/// Compile a pattern the way the scanner runs it: over bytes, ASCII by
/// default, leftmost-first, with the configuration `regex::bytes::Regex` uses
/// (so it finds exactly what that finds). Errors read as the `regex` crate's.
pub(crate) fn compile_pattern(regex: &str) -> Result<Pattern, String> {
    use regex_automata::{MatchKind, meta, util::syntax};
    let config = meta::Config::new()
        .match_kind(MatchKind::LeftmostFirst)
        .utf8_empty(false)
        .nfa_size_limit(Some(1 << 22))
        .hybrid_cache_capacity(2 * (1 << 20));
    meta::Builder::new()
        .configure(config)
        .syntax(syntax::Config::new().utf8(false))
        .build(&format!("(?-u){regex}"))
        .map_err(|e| match (e.syntax_error(), e.size_limit()) {
            (Some(syntax), _) => syntax.to_string(),
            (None, Some(limit)) => {
                format!("compiled regex exceeds size limit of {limit} bytes")
            }
            (None, None) => e.to_string(),
        })
}

fn strip_comment(line: &str) -> &str {
    // `#` starts a comment only at the line start or after whitespace, so
    // patterns may contain `#`.
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn parse_elements(body: &str) -> Result<Vec<ElementDef>, String> {
    let mut elements = Vec::new();
    let mut gap = 0u32;
    let mut rest = body.trim();
    loop {
        let (piece, next) = match rest.find('~') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let alternatives: Vec<String> = piece
            .split('|')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if alternatives.is_empty() {
            return Err("empty rule element".into());
        }
        elements.push(ElementDef {
            alternatives,
            max_gap: gap,
        });
        let Some(next) = next else { break };
        let digits: String = next.chars().take_while(char::is_ascii_digit).collect();
        gap = digits
            .parse()
            .map_err(|_| "`~` must be followed by a word count".to_owned())?;
        rest = next[digits.len()..].trim_start();
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_defined_twice_in_one_text_is_an_error() {
        let text = "lex A: a\nrule r.one f 1.0: @A\nrule r.one f 0.5: @A\n";
        match RuleSet::parse(text) {
            Err(SecurityError::Rules { line, reason }) => {
                assert_eq!(line, 3);
                assert!(reason.contains("already defined on line 2"), "{reason}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        // Replacing a rule from another text is allowed.
        let mut set = RuleSet::parse("lex A: a\nrule r.one f 1.0: @A\n").unwrap();
        set.extend_from_str("rule r.one f 0.5: @A\n").unwrap();
        assert_eq!(set.rules.len(), 1);
        assert!((set.rules[0].weight - 0.5).abs() < f32::EPSILON);
    }

    #[test]
    fn builtin_rules_parse() {
        let set = RuleSet::parse(BUILTIN_RULES).unwrap();
        assert!(set.rules.len() > 100, "only {} rules", set.rules.len());
        assert!(set.lexicons.len() > 20);
    }

    #[test]
    fn parses_elements_gaps_and_alternatives() {
        let set =
            RuleSet::parse("lex A: one, two*\nrule r fam 0.5: @A ~3 three|four five  # comment\n")
                .unwrap();
        let r = &set.rules[0];
        assert_eq!(r.weight, 0.5);
        assert_eq!(r.elements.len(), 2);
        assert_eq!(r.elements[1].max_gap, 3);
        assert_eq!(r.elements[1].alternatives, vec!["three", "four five"]);
    }

    #[test]
    fn errors_name_the_line() {
        let err = RuleSet::parse("lex A: x\n\nrule r fam abc: @A").unwrap_err();
        assert!(matches!(err, SecurityError::Rules { line: 3, .. }), "{err}");
        let err = RuleSet::parse("rule r fam 1: @MISSING").unwrap_err();
        assert!(err.to_string().contains("MISSING"));
        assert!(RuleSet::parse("pattern P: (unclosed").is_err());
        assert!(RuleSet::parse("gate P: x").is_err());
        let set = RuleSet::parse("pattern P: #{2}x\ngate P: ## ; <|").unwrap();
        assert_eq!(set.patterns[0].regex, "#{2}x");
        assert_eq!(set.patterns[0].gates, vec!["##", "<|"]);
    }

    #[test]
    fn redefining_a_rule_replaces_it_and_lexicons_extend() {
        let mut set = RuleSet::parse("lex A: x\nrule r f 1: @A").unwrap();
        set.merge(RuleSet::parse("lex A: y\nrule r f 2: @A").unwrap())
            .unwrap();
        assert_eq!(set.rules.len(), 1);
        assert_eq!(set.rules[0].weight, 2.0);
        assert_eq!(set.lexicons[0].entries, vec!["x", "y"]);
    }
}
