//! The compiled rule set and the linear-time scan.
//!
//! Lexicon phrases become one Aho-Corasick automaton over the normalised word
//! view (plus ROT13 twins of every ASCII phrase, so ROT13 text matches the same
//! rules); patterns become one `RegexSet` over the raw input. A scan finds all
//! concept hits in one pass of each, then checks every rule against the hits
//! with binary searches: work is linear in the input plus the (bounded) hits.

use std::collections::HashMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::bytes::Regex;

use super::normalize::{Normalized, normalize};
use super::rules::{RuleSet, compile_pattern};
use crate::error::SecurityError;

/// Most hits per raw pattern per scan; bounds work on adversarial input.
const MAX_PATTERN_HITS: usize = 64;

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) name: Arc<str>,
    pub(crate) family: Arc<str>,
    pub(crate) weight: f32,
    /// (alternative concepts, max words since the previous element)
    elements: Vec<(Vec<u32>, u32)>,
}

#[derive(Debug)]
pub(crate) struct Compiled {
    ac: Option<AhoCorasick>,
    /// For each automaton pattern: the concepts it belongs to and whether it is a prefix.
    targets: Vec<Vec<(u32, bool)>>,
    /// Gate substrings of all patterns (ASCII case-insensitive).
    gates: Option<AhoCorasick>,
    /// For each gate: the patterns (indexes into `regexes`) it opens.
    gate_targets: Vec<Vec<usize>>,
    /// (concept, regex, always run)
    regexes: Vec<(u32, Regex, bool)>,
    pub(crate) rules: Vec<CompiledRule>,
    concepts: usize,
}

/// One rule that matched, with its span in the scanned input.
#[derive(Debug, Clone)]
pub(crate) struct RawMatch {
    pub(crate) rule: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

pub(crate) struct Scan {
    pub(crate) normalized: Normalized,
    pub(crate) matches: Vec<RawMatch>,
}

fn rot13(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='m' => ((c as u8) + 13) as char,
            'n'..='z' => ((c as u8) - 13) as char,
            other => other,
        })
        .collect()
}

impl Compiled {
    pub(crate) fn new(set: &RuleSet) -> Result<Self, SecurityError> {
        set.check_references()?;
        let mut concept_ids: HashMap<String, u32> = HashMap::new();
        let id_of = |name: &str, ids: &mut HashMap<String, u32>| -> u32 {
            let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            *ids.entry(name.to_owned()).or_insert(next)
        };
        let mut pattern_index: HashMap<String, usize> = HashMap::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut targets: Vec<Vec<(u32, bool)>> = Vec::new();
        let mut add_phrase = |phrase: &str, concept: u32| {
            let (body, prefix) = match phrase.strip_suffix('*') {
                Some(b) => (b, true),
                None => (phrase, false),
            };
            let text = normalize(body).text;
            if text.is_empty() {
                return;
            }
            let mut variants = vec![text.clone()];
            let letters = text.chars().filter(char::is_ascii_lowercase).count();
            if letters >= 4 && text.chars().all(|c| c.is_ascii_lowercase() || c == ' ') {
                variants.push(rot13(&text));
            }
            for v in variants {
                // Patterns carry their word boundaries: ` word ` (or ` prefix` for
                // prefix entries), matched against the word view padded with a
                // space at each end, so the automaton only reports whole words.
                let v = if prefix {
                    format!(" {v}")
                } else {
                    format!(" {v} ")
                };
                let idx = *pattern_index.entry(v.clone()).or_insert_with(|| {
                    patterns.push(v);
                    targets.push(Vec::new());
                    targets.len() - 1
                });
                if !targets[idx].contains(&(concept, prefix)) {
                    targets[idx].push((concept, prefix));
                }
            }
        };

        for lex in &set.lexicons {
            let id = id_of(&lex.name, &mut concept_ids);
            for entry in &lex.entries {
                add_phrase(entry, id);
            }
        }
        let mut regexes = Vec::new();
        let mut gate_index: HashMap<String, usize> = HashMap::new();
        let mut gate_patterns: Vec<String> = Vec::new();
        let mut gate_targets: Vec<Vec<usize>> = Vec::new();
        for (index, p) in set.patterns.iter().enumerate() {
            let id = id_of(&p.name, &mut concept_ids);
            let re = compile_pattern(&p.regex).map_err(|e| SecurityError::Rules {
                line: 0,
                reason: format!("pattern {}: {e}", p.name),
            })?;
            regexes.push((id, re, p.gates.is_empty()));
            for gate in &p.gates {
                let g = *gate_index
                    .entry(gate.to_ascii_lowercase())
                    .or_insert_with(|| {
                        gate_patterns.push(gate.to_ascii_lowercase());
                        gate_targets.push(Vec::new());
                        gate_targets.len() - 1
                    });
                gate_targets[g].push(index);
            }
        }
        let gates = if gate_patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&gate_patterns)
                    .map_err(|e| SecurityError::Rules {
                        line: 0,
                        reason: format!("pattern gates: {e}"),
                    })?,
            )
        };
        let mut rules = Vec::new();
        for r in &set.rules {
            let mut elements = Vec::new();
            for e in &r.elements {
                let mut alts = Vec::new();
                for alt in &e.alternatives {
                    let id = match alt.strip_prefix('@') {
                        Some(concept) => id_of(concept, &mut concept_ids),
                        None => {
                            let key = format!("\"{alt}\"");
                            let fresh = !concept_ids.contains_key(&key);
                            let id = id_of(&key, &mut concept_ids);
                            if fresh {
                                add_phrase(alt, id);
                            }
                            id
                        }
                    };
                    alts.push(id);
                }
                elements.push((alts, e.max_gap));
            }
            rules.push(CompiledRule {
                name: r.name.as_str().into(),
                family: r.family.as_str().into(),
                weight: r.weight,
                elements,
            });
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&patterns)
                    .map_err(|e| SecurityError::Rules {
                        line: 0,
                        reason: format!("lexicon automaton: {e}"),
                    })?,
            )
        };
        Ok(Self {
            ac,
            targets,
            gates,
            gate_targets,
            regexes,
            rules,
            concepts: concept_ids.len(),
        })
    }

    /// Scan `input` (one window) and return the rules that matched.
    pub(crate) fn scan(&self, input: &str) -> Scan {
        let normalized = normalize(input);
        let text = normalized.text.as_str();
        let bytes = text.as_bytes();
        let mut flat: Vec<(u32, usize, usize)> = Vec::new();
        if let Some(ac) = &self.ac {
            let mut padded = String::with_capacity(text.len() + 2);
            padded.push(' ');
            padded.push_str(text);
            padded.push(' ');
            for m in ac.find_overlapping_iter(&padded) {
                // Padded index k is text index k - 1; the match starts at its space.
                let s = m.start();
                for &(concept, prefix) in &self.targets[m.pattern().as_usize()] {
                    let e = if prefix {
                        // A prefix covers the rest of its word.
                        let e = m.end() - 1;
                        bytes[e.min(bytes.len())..]
                            .iter()
                            .position(|b| *b == b' ')
                            .map_or(bytes.len(), |i| e + i)
                    } else {
                        m.end() - 2
                    };
                    flat.push((concept, s, e.max(s)));
                }
            }
        }
        if !self.regexes.is_empty() {
            let mut open: Vec<bool> = self.regexes.iter().map(|r| r.2).collect();
            if let Some(gates) = &self.gates {
                for m in gates.find_overlapping_iter(input) {
                    for &p in &self.gate_targets[m.pattern().as_usize()] {
                        open[p] = true;
                    }
                }
            }
            for (i, (concept, re, _)) in self.regexes.iter().enumerate() {
                if !open[i] {
                    continue;
                }
                for m in re.find_iter(input.as_bytes()).take(MAX_PATTERN_HITS) {
                    let s = normalized.text_pos(m.start());
                    let e = normalized.text_pos(m.end()).max(s);
                    flat.push((*concept, s, e));
                }
            }
        }
        let hits = Hits::new(flat, self.concepts);
        let mut matches = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            // Most rules have an element with no hit at all: skip them cheaply.
            let possible = rule
                .elements
                .iter()
                .all(|(alts, _)| alts.iter().any(|c| !hits.get(*c).is_empty()));
            if !possible {
                continue;
            }
            if let Some((s, e)) = match_rule(rule, &hits, bytes) {
                let (start, end) = normalized.input_span(s, e, input);
                matches.push(RawMatch {
                    rule: index,
                    start,
                    end,
                });
            }
        }
        Scan {
            normalized,
            matches,
        }
    }
}

/// Concept hits, sorted by concept then position, with an index of where each
/// concept's hits start: one allocation per scan whatever the number of concepts.
struct Hits {
    spans: Vec<(usize, usize)>,
    starts: Vec<u32>,
}

impl Hits {
    fn new(mut flat: Vec<(u32, usize, usize)>, concepts: usize) -> Self {
        flat.sort_unstable();
        flat.dedup();
        let mut starts = vec![0u32; concepts + 1];
        for &(c, _, _) in &flat {
            if let Some(slot) = starts.get_mut(c as usize + 1) {
                *slot += 1;
            }
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        Self {
            spans: flat.into_iter().map(|(_, s, e)| (s, e)).collect(),
            starts,
        }
    }

    fn get(&self, concept: u32) -> &[(usize, usize)] {
        let c = concept as usize;
        match (self.starts.get(c), self.starts.get(c + 1)) {
            (Some(&a), Some(&b)) => self.spans.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

fn match_rule(rule: &CompiledRule, hits: &Hits, text: &[u8]) -> Option<(usize, usize)> {
    let (first, rest) = rule.elements.split_first()?;
    for &concept in &first.0 {
        for &(s, e) in hits.get(concept) {
            if let Some(end) = extend(rest, hits, text, e) {
                return Some((s, end));
            }
        }
    }
    None
}

fn extend(
    elements: &[(Vec<u32>, u32)],
    hits: &Hits,
    text: &[u8],
    mut prev_end: usize,
) -> Option<usize> {
    for (alts, gap) in elements {
        let mut best: Option<(usize, usize)> = None;
        for &concept in alts {
            let list = hits.get(concept);
            let i = list.partition_point(|h| h.0 < prev_end);
            if let Some(&(s, e)) = list.get(i)
                && best.is_none_or(|b| s < b.0)
            {
                best = Some((s, e));
            }
        }
        let (s, e) = best?;
        if words_between(text, prev_end, s, *gap) > *gap {
            return None;
        }
        prev_end = e;
    }
    Some(prev_end)
}

/// Words strictly between byte `a` and byte `b` of the word view, counting no
/// further than `limit + 1`.
fn words_between(text: &[u8], a: usize, b: usize, limit: u32) -> u32 {
    let mut spaces = 0u32;
    for &byte in &text[a.min(b)..b] {
        if byte == b' ' {
            spaces += 1;
            if spaces > limit + 1 {
                break;
            }
        }
    }
    spaces.saturating_sub(1)
}

impl Compiled {
    /// A rule set that matches nothing.
    pub(crate) fn empty() -> Self {
        Self {
            ac: None,
            targets: Vec::new(),
            gates: None,
            gate_targets: Vec::new(),
            regexes: Vec::new(),
            rules: Vec::new(),
            concepts: 0,
        }
    }
}
