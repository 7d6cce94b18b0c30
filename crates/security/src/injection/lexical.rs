//! A linear model over the words and word pairs of the normalised text: the
//! evidence phrase rules miss when an attack is worded afresh.
//!
//! The model is data, like the rules: one weight per word or pair of adjacent
//! words (as they appear in [`normalize`](super::normalize())'s word view),
//! plus a bias. A window's logit is the bias plus the weights of the distinct
//! words and pairs it contains (each counts once, however often it occurs), so
//! scoring is linear in the input.
//!
//! A detector folds the model's words into the dictionary of its phrase rules
//! ([`LexicalIndex`]): the one dictionary lookup a scan makes per word also
//! finds the word's weight, and a pair is looked up only when both of its
//! words are words of the model.
//!
//! The text format, one entry per line (`#` starts a comment line); words are
//! in the normalised form (lower case, folded) or they could never match:
//!
//! ```text
//! bias -2.4
//! 2.1 your
//! 1.47 the user
//! -1.98 can you
//! ```
//!
//! The built-in model ([`BUILTIN_MODEL`]) is a logistic regression trained by
//! `tools/train_lexical.py` on the crate's development corpus (`tests/data`,
//! the newest hold-out round excluded: it measures the model unseen) and on
//! chunks of benign technical text (crate READMEs, changelogs and sources,
//! Python modules), so that documentation and code do not read as attacks.

use std::cell::RefCell;
use std::collections::HashSet;

use rustc_hash::FxHashMap;

use super::normalize::normalize;
use crate::error::SecurityError;

/// The built-in model's text.
pub const BUILTIN_MODEL: &str = include_str!("../../rules/default.model");

/// Most entries a model may hold: bounds memory whatever text is loaded.
pub const MAX_MODEL_ENTRIES: usize = 1 << 20;

/// No word or entry.
const NONE: u32 = u32::MAX;

/// One entry of a model: a word, or a pair of adjacent words, and its weight.
#[derive(Debug, Clone)]
struct Entry {
    first: Box<[u8]>,
    second: Option<Box<[u8]>>,
    weight: f32,
}

/// A linear model over words and adjacent word pairs (see the module docs).
#[derive(Debug, Clone)]
pub struct LexicalModel {
    bias: f32,
    /// The entries in the order of the model text.
    entries: Vec<Entry>,
}

impl LexicalModel {
    /// Parse the text format (see the module docs). Errors name the line.
    pub fn parse(text: &str) -> Result<Self, SecurityError> {
        let err = |line: usize, reason: String| SecurityError::Rules {
            line: line + 1,
            reason,
        };
        let mut bias_line = None;
        let mut bias = None;
        let mut entries = Vec::new();
        let mut listed: HashSet<&str> = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim();
            if head == "bias" {
                if let Some(first) = bias_line {
                    return Err(err(
                        n,
                        format!("a second bias line (the first is line {})", first + 1),
                    ));
                }
                bias_line = Some(n);
                let value: f32 = rest
                    .parse()
                    .map_err(|_| err(n, format!("bad bias {rest:?}")))?;
                if !value.is_finite() {
                    return Err(err(n, "bias must be finite".into()));
                }
                bias = Some(value);
                continue;
            }
            let weight: f32 = head
                .parse()
                .map_err(|_| err(n, format!("bad weight {head:?}")))?;
            if !weight.is_finite() {
                return Err(err(n, "weight must be finite".into()));
            }
            let words: Vec<&[u8]> = rest.split(' ').map(str::as_bytes).collect();
            if rest.is_empty() || words.len() > 2 || words.iter().any(|w| w.is_empty()) {
                return Err(err(
                    n,
                    format!("expected one word or two words after the weight, got {rest:?}"),
                ));
            }
            let normal = normalize(rest).text;
            if normal != rest {
                return Err(err(
                    n,
                    format!(
                        "{rest:?} is not in normalised form ({normal:?}), so it could never match"
                    ),
                ));
            }
            if entries.len() == MAX_MODEL_ENTRIES {
                return Err(err(n, format!("more than {MAX_MODEL_ENTRIES} entries")));
            }
            if !listed.insert(rest) {
                return Err(err(n, format!("{rest:?} is listed twice")));
            }
            entries.push(Entry {
                first: words[0].into(),
                second: words.get(1).map(|&w| w.into()),
                weight,
            });
        }
        let bias = bias.ok_or(SecurityError::Rules {
            line: 0,
            reason: "the model has no bias line".into(),
        })?;
        Ok(Self { bias, entries })
    }

    /// The built-in model.
    pub fn builtin() -> Result<Self, SecurityError> {
        Self::parse(BUILTIN_MODEL)
    }

    /// How many words and pairs carry a weight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no word or pair carries a weight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A model folded into a word dictionary: weights by the dictionary's word
/// ids, which a scan finds for every word anyway.
#[derive(Debug, Clone)]
pub(crate) struct LexicalIndex {
    bias: f32,
    /// Dictionary id → the model word's own index, or [`NONE`] for a
    /// dictionary word the model does not weigh.
    word_of: Vec<u32>,
    /// Per model word: the (weight, entry index) of its word entry; entry
    /// [`NONE`] when only pairs weigh it.
    words: Vec<(f32, u32)>,
    /// One bit per (hashed) pair of model words with an entry
    /// ([`LexicalIndex::pair_bit`]): most pairs of model words have none,
    /// and skip the map with one test.
    pair_filter: Vec<u64>,
    /// (first, second) model word indexes ([`pair_key`]) → (weight, entry index).
    pairs: FxHashMap<u64, (f32, u32)>,
    /// How many entries there are (entry indexes are below).
    entries: u32,
}

/// The key of the pair of model words `first`, `second` in [`LexicalIndex::pairs`].
fn pair_key(first: u32, second: u32) -> u64 {
    (u64::from(first) << 32) | u64::from(second)
}

/// Buffers of [`LexicalIndex::logit`], kept between calls on a thread.
#[derive(Default)]
struct Scratch {
    /// One bit per entry index: which entries were counted already in this
    /// call (all clear between calls).
    seen: Vec<u64>,
    /// The entries counted in this call, whose bits are cleared at its end.
    counted: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl LexicalIndex {
    /// Fold `model` into a dictionary: `word_id` gives (adding it where it is
    /// missing) the dictionary id of a word.
    pub(crate) fn new(model: &LexicalModel, mut word_id: impl FnMut(&[u8]) -> u32) -> Self {
        let mut index = Self {
            bias: model.bias,
            word_of: Vec::new(),
            words: Vec::new(),
            pair_filter: Vec::new(),
            pairs: FxHashMap::default(),
            entries: u32::try_from(model.entries.len()).unwrap_or(NONE),
        };
        let mut model_word = |word: &[u8], index: &mut Self| {
            let id = word_id(word) as usize;
            if index.word_of.len() <= id {
                index.word_of.resize(id + 1, NONE);
            }
            if index.word_of[id] == NONE {
                index.word_of[id] = u32::try_from(index.words.len()).unwrap_or(NONE);
                index.words.push((0.0, NONE));
            }
            index.word_of[id]
        };
        let pairs = model.entries.iter().filter(|e| e.second.is_some()).count();
        index.pair_filter = vec![0; (pairs * 16).div_ceil(64).next_power_of_two()];
        for (at, entry) in model.entries.iter().enumerate() {
            let at = u32::try_from(at).unwrap_or(NONE);
            let first = model_word(&entry.first, &mut index);
            match &entry.second {
                None => index.words[first as usize] = (entry.weight, at),
                Some(second) => {
                    let second = model_word(second, &mut index);
                    let key = pair_key(first, second);
                    let bit = index.pair_bit(key);
                    index.pair_filter[bit / 64] |= 1 << (bit % 64);
                    index.pairs.insert(key, (entry.weight, at));
                }
            }
        }
        index
    }

    /// The filter bit of pair key `key`.
    fn pair_bit(&self, key: u64) -> usize {
        let bits = self.pair_filter.len() * 64;
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (bits - 1)
    }

    /// The logit of a text whose words have dictionary ids `ids` (in order;
    /// [`NONE`] for a word outside the dictionary).
    pub(crate) fn logit(&self, ids: &[u32]) -> f32 {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch { seen, counted } = &mut *scratch;
            let bits = (self.entries as usize).div_ceil(64);
            if seen.len() < bits {
                seen.resize(bits, 0);
            }
            let mut sum = self.bias;
            let mut count = |(weight, entry): (f32, u32)| {
                if let Some(word) = seen.get_mut(entry as usize / 64) {
                    let bit = 1u64 << (entry % 64);
                    if *word & bit == 0 {
                        *word |= bit;
                        sum += weight;
                        counted.push(entry);
                    }
                }
            };
            let mut previous = NONE;
            for &id in ids {
                let word = self.word_of.get(id as usize).copied().unwrap_or(NONE);
                if word == NONE {
                    previous = NONE;
                    continue;
                }
                let weighed = self.words[word as usize];
                if weighed.1 != NONE {
                    count(weighed);
                }
                if previous != NONE {
                    let key = pair_key(previous, word);
                    let bit = self.pair_bit(key);
                    if self.pair_filter[bit / 64] & (1 << (bit % 64)) != 0
                        && let Some(&weighed) = self.pairs.get(&key)
                    {
                        count(weighed);
                    }
                }
                previous = word;
            }
            for entry in counted.drain(..) {
                if let Some(word) = seen.get_mut(entry as usize / 64) {
                    *word = 0;
                }
            }
            // Bounded like the scan's buffers: a long text's room is not kept.
            if counted.capacity() > 16 * 1024 {
                *counted = Vec::new();
            }
            sum
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::normalize::normalize;
    use crate::injection::phrases::PhraseIndex;

    /// The logit of `text` with `model` folded into a dictionary that holds
    /// the words of `phrases` too (as a detector's rules put theirs there).
    fn logit_with(model: &LexicalModel, phrases: &[&str], text: &str) -> f32 {
        let mut dictionary = PhraseIndex::default();
        for (concept, phrase) in (0..).zip(phrases) {
            dictionary.add(phrase, false, concept);
        }
        dictionary.finish();
        let index = LexicalIndex::new(model, |word| dictionary.add_vocabulary(word));
        let n = normalize(text);
        let mut ids = Vec::new();
        let _ = dictionary.scan(
            &n.text,
            &n.words,
            &mut Vec::new(),
            &mut Vec::new(),
            Vec::new(),
            &mut ids,
        );
        index.logit(&ids)
    }

    fn logit(model: &LexicalModel, text: &str) -> f32 {
        logit_with(model, &["your rules", "why not"], text)
    }

    #[test]
    fn words_and_pairs_count_once_each() {
        let model =
            LexicalModel::parse("# test\nbias -1\n2 ignore\n0.5 your rules\n-1 why\n").unwrap();
        assert_eq!(model.len(), 3);
        assert!((logit(&model, "hello there") + 1.0).abs() < 1e-6);
        assert!((logit(&model, "IGNORE your rules") - 1.5).abs() < 1e-6);
        // Repeats count once; the pair must be adjacent.
        assert!((logit(&model, "ignore ignore, your rules your rules") - 1.5).abs() < 1e-6);
        assert!((logit(&model, "your own rules") + 1.0).abs() < 1e-6);
        assert!((logit(&model, "why ignore") - 0.0).abs() < 1e-6);
        // The scratch bits are cleared between texts.
        assert!((logit(&model, "ignore") - 1.0).abs() < 1e-6);
        assert!((logit(&model, "ignore") - 1.0).abs() < 1e-6);
    }

    /// `i` spelled in letters (normalisation reads digits in words as leetspeak).
    fn letters(mut i: usize) -> String {
        let mut out = String::new();
        loop {
            out.push(char::from(b'a' + (i % 26) as u8));
            i /= 26;
            if i == 0 {
                return out;
            }
        }
    }

    #[test]
    fn every_entry_of_a_large_model_is_found_and_nothing_else() {
        let weight = |i: usize| (i % 97) as f32 / 10.0 + 0.1;
        let mut text = String::from("bias 0\n");
        for i in 0..20_000 {
            let w = letters(i);
            if i % 3 == 0 {
                text.push_str(&format!("{} word{w} next{w}\n", weight(i)));
            } else {
                text.push_str(&format!("{} word{w}\n", weight(i)));
            }
        }
        let model = LexicalModel::parse(&text).unwrap();
        assert_eq!(model.len(), 20_000);
        for i in (0..20_000).step_by(7) {
            let w = letters(i);
            // A pair entry for multiples of three, a word entry (counted
            // once, however often it occurs) otherwise.
            let input = if i % 3 == 0 {
                format!("word{w} next{w}")
            } else {
                format!("word{w} unknown word{w}")
            };
            let got = logit(&model, &input);
            assert!((got - weight(i)).abs() < 1e-4, "entry {i}: {got}");
        }
        assert_eq!(logit(&model, "wordzzzzz nextb unknown"), 0.0);
    }

    #[test]
    fn bad_model_text_is_rejected_with_its_line() {
        for (text, line) in [
            ("bias x", 1),
            ("bias 1\nfoo bar", 2),
            ("bias 1\n1.0", 2),
            ("bias 1\n1.0 a b c", 2),
            ("bias 1\n1.0 a\n2.0 a", 3),
            ("bias 1\ninf a", 2),
            ("bias 1\n1.0 Ignore", 2),
            ("bias 1\n1.0 don't", 2),
            ("bias 1\nbias 2", 2),
            ("1.0 a", 0),
        ] {
            match LexicalModel::parse(text) {
                Err(SecurityError::Rules { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    /// The logit as the model's definition states it, with a map.
    fn reference(entries: &[(String, f32)], bias: f32, text: &str) -> f32 {
        let map: std::collections::HashMap<&str, f32> =
            entries.iter().map(|(k, w)| (k.as_str(), *w)).collect();
        let n = normalize(text);
        let words: Vec<&str> = n.text.split(' ').filter(|w| !w.is_empty()).collect();
        let mut grams: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        grams.extend(words.windows(2).map(|p| format!("{} {}", p[0], p[1])));
        grams.sort();
        grams.dedup();
        bias + grams
            .iter()
            .filter_map(|g| map.get(g.as_str()))
            .sum::<f32>()
    }

    proptest::proptest! {
        #[test]
        fn logit_is_the_bias_plus_each_distinct_entry_once(
            vocabulary in proptest::collection::btree_set("[a-e]{1,3}|[a-c]{9,12}", 1..12),
            picks in proptest::collection::vec((0usize..64, 0usize..64, -4.0f32..4.0), 0..40),
            text in proptest::collection::vec(0usize..64, 0..400),
            phrase_words in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let vocabulary: Vec<String> = vocabulary.into_iter().collect();
            let word = |i: usize| vocabulary[i % vocabulary.len()].clone();
            let mut entries: Vec<(String, f32)> = Vec::new();
            for (a, b, w) in picks {
                let gram = if a % 2 == 0 { word(a) } else { format!("{} {}", word(a), word(b)) };
                if !entries.iter().any(|(g, _)| *g == gram) {
                    entries.push((gram, w));
                }
            }
            let mut model_text = String::from("bias -0.5\n");
            for (g, w) in &entries {
                model_text.push_str(&format!("{w} {g}\n"));
            }
            let model = LexicalModel::parse(&model_text).unwrap();
            // The dictionary's own words: some of the model's, some not.
            let phrases: Vec<String> = phrase_words.iter().map(|&i| word(i)).collect();
            let phrases: Vec<&str> = phrases.iter().map(String::as_str).collect();
            let text: Vec<String> = text.into_iter().map(word).collect();
            let text = text.join(" ");
            let expected = reference(&entries, -0.5, &text);
            let got = logit_with(&model, &phrases, &text);
            proptest::prop_assert!((got - expected).abs() < 1e-3, "{} != {}", got, expected);
        }
    }

    #[test]
    fn the_builtin_model_parses_and_weighs_both_ways() {
        let model = LexicalModel::builtin().unwrap();
        assert!(model.len() > 1000);
        let weights: Vec<f32> = model.entries.iter().map(|e| e.weight).collect();
        assert!(weights.iter().any(|&w| w > 0.5));
        assert!(weights.iter().any(|&w| w < -0.5));
    }
}
