//! A linear model over the words and word pairs of the normalised text: the
//! evidence phrase rules miss when an attack is worded afresh.
//!
//! The model is data, like the rules: one weight per word or pair of adjacent
//! words (as they appear in [`normalize`](super::normalize())'s word view),
//! plus a bias. A window's logit is the bias plus the weights of the distinct
//! words and pairs it contains (each counts once, however often it occurs), so
//! scoring is one hash lookup per word and per pair: linear in the input.
//!
//! The text format, one entry per line (`#` starts a comment line):
//!
//! ```text
//! bias -2.4
//! 2.1 your
//! 1.47 the user
//! -1.98 can you
//! ```
//!
//! The built-in model ([`BUILTIN_MODEL`]) is a logistic regression trained on
//! the crate's development corpus (`tests/data`, the hold-out rounds kept for
//! measurement excluded) with `tools/train_lexical.py`.

use std::cell::RefCell;
use std::hash::Hasher;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use rustc_hash::FxHasher;

use super::phrases::head_at;
use crate::error::SecurityError;

/// The built-in model's text.
pub const BUILTIN_MODEL: &str = include_str!("../../rules/default.model");

/// Most entries a model may hold: bounds memory whatever text is loaded.
pub const MAX_MODEL_ENTRIES: usize = 1 << 20;

/// A linear model over words and adjacent word pairs (see the module docs).
#[derive(Debug, Clone)]
pub struct LexicalModel {
    bias: f32,
    /// How many entries (words and pairs) the model has.
    entries: u32,
    /// N-gram keys ([`unigram`], [`bigram`]) → weight, by the keys' top
    /// bits: a power of two of buckets, one per four entries. An entry's
    /// index (for counting it once) is its bucket × [`SLOTS`] + its slot.
    buckets: Vec<Bucket>,
    /// `64 − log2(buckets)`: a key's bucket is `key >> shift`.
    shift: u32,
    /// Entries whose bucket was full (rare) → (weight, index past the
    /// buckets' slots), and one bit per such bucket.
    overflow: KeyMap<(f32, u32)>,
    overflowed: Vec<u64>,
    /// The index of no entry (weight 0): one past every entry's index.
    none: u32,
}

thread_local! {
    /// One bit per model entry: which entries a window has counted already.
    /// Cleared after each window through the list of entries it set.
    static SEEN: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// The identity of the word `text[s..e]`: its bytes packed when they fit in
/// eight (words hold no NUL, so the zero padding cannot collide), a hash of
/// them otherwise.
fn word_key(text: &[u8], s: usize, e: usize) -> u64 {
    if e - s <= 8 {
        head_at(text, s, e)
    } else {
        let mut h = FxHasher::default();
        h.write(text.get(s..e).unwrap_or(&[]));
        h.write_usize(e - s);
        h.finish()
    }
}

/// Spread `x` over all 64 bits (a multiply-xorshift finaliser).
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 32)
}

/// The key of a word (from its [`word_key`]).
fn unigram(word: u64) -> u64 {
    mix(word)
}

/// The key of a pair of adjacent words (from their [`word_key`]s).
fn bigram(first: u64, second: u64) -> u64 {
    mix(mix(first) ^ second.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15)
}

/// Slots per bucket of the weight table: one cache line of key fingerprints
/// and weights, compared all at once without a branch.
const SLOTS: usize = 8;

/// One bucket of the weight table. A slot holds the low 32 bits of its key
/// (the bucket is chosen by the top bits); an empty slot holds 0.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    fingerprints: [u32; SLOTS],
    weights: [f32; SLOTS],
}

/// The fingerprint of a key in its bucket.
fn fingerprint(key: u64) -> u32 {
    key as u32
}

/// A hasher for keys that are already well mixed: it passes them through.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

impl LexicalModel {
    /// Parse the text format (see the module docs). Errors name the line.
    pub fn parse(text: &str) -> Result<Self, SecurityError> {
        let err = |line: usize, reason: String| SecurityError::Rules {
            line: line + 1,
            reason,
        };
        let mut bias = None;
        let mut entries: KeyMap<(f32, u32)> = KeyMap::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim();
            if head == "bias" {
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
            if entries.len() == MAX_MODEL_ENTRIES {
                return Err(err(n, format!("more than {MAX_MODEL_ENTRIES} entries")));
            }
            let index = u32::try_from(entries.len()).unwrap_or(u32::MAX);
            let key_of = |w: &[u8]| word_key(w, 0, w.len());
            let key = match *words.as_slice() {
                [a, b] => bigram(key_of(a), key_of(b)),
                [w, ..] => unigram(key_of(w)),
                [] => continue,
            };
            if entries.insert(key, (weight, index)).is_some() {
                return Err(err(n, format!("{rest:?} is listed twice")));
            }
        }
        let bias = bias.ok_or_else(|| err(0, "the model has no bias line".into()))?;
        Ok(Self::build(bias, &entries))
    }

    fn build(bias: f32, entries: &KeyMap<(f32, u32)>) -> Self {
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let buckets = entries.len().div_ceil(SLOTS / 2).max(1).next_power_of_two();
        let shift = 64 - buckets.trailing_zeros();
        let slots = u32::try_from(buckets * SLOTS).unwrap_or(u32::MAX);
        let mut model = Self {
            bias,
            entries: count,
            buckets: vec![Bucket::default(); buckets],
            shift,
            overflow: KeyMap::default(),
            overflowed: vec![0; buckets.div_ceil(64)],
            none: slots,
        };
        // In entry order, so a model's layout does not depend on hashing.
        let mut sorted: Vec<(u64, (f32, u32))> = entries.iter().map(|(k, v)| (*k, *v)).collect();
        sorted.sort_by_key(|e| e.1.1);
        for (key, (weight, _)) in sorted {
            let at = model.bucket_of(key);
            let print = fingerprint(key);
            let bucket = &mut model.buckets[at];
            // A fingerprint shared within a bucket, or 0, goes to the overflow.
            let clash = print == 0 || bucket.fingerprints.contains(&print);
            match bucket.fingerprints.iter().position(|&f| f == 0) {
                Some(slot) if !clash => {
                    bucket.fingerprints[slot] = print;
                    bucket.weights[slot] = weight;
                }
                _ => {
                    let index = slots + u32::try_from(model.overflow.len()).unwrap_or(0);
                    model.overflow.insert(key, (weight, index));
                    model.overflowed[at / 64] |= 1 << (at % 64);
                }
            }
        }
        model.none = slots + u32::try_from(model.overflow.len()).unwrap_or(0);
        model
    }

    fn bucket_of(&self, key: u64) -> usize {
        key.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// The weight and entry index of `key`; (0, `none`) if it has none.
    #[inline(always)]
    fn lookup(&self, key: u64) -> (f32, u32) {
        let at = self.bucket_of(key);
        let Some(bucket) = self.buckets.get(at) else {
            return (0.0, self.none);
        };
        // Selected by masks, not branches: whether an n-gram has an entry is
        // as unpredictable as the text.
        let print = fingerprint(key);
        let base = u32::try_from(at * SLOTS).unwrap_or(0);
        let (mut weight, mut index) = (0u32, self.none);
        for slot in 0..SLOTS {
            let mask = u32::from(bucket.fingerprints[slot] == print).wrapping_neg();
            weight |= bucket.weights[slot].to_bits() & mask;
            index = (index & !mask) | ((base + slot as u32) & mask);
        }
        let mut found = (f32::from_bits(weight), index);
        if found.1 == self.none
            && self.overflowed[at / 64] & (1 << (at % 64)) != 0
            && let Some(&entry) = self.overflow.get(&key)
        {
            found = entry;
        }
        found
    }

    /// The built-in model.
    pub fn builtin() -> Result<Self, SecurityError> {
        Self::parse(BUILTIN_MODEL)
    }

    /// How many words and pairs carry a weight.
    pub fn len(&self) -> usize {
        self.entries as usize
    }

    /// Whether no word or pair carries a weight.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The logit of `text`, a word view whose words are at `words`.
    pub(crate) fn logit(&self, text: &str, words: &[(u32, u32)]) -> f32 {
        let bytes = text.as_bytes();
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            // One bit per entry index and one for no entry; all clear.
            let bits = (self.none as usize + 1).div_ceil(64);
            seen.clear();
            seen.resize(bits, 0);
            let mut sum = self.bias;
            let mut count = |key: u64| {
                let (weight, index) = self.lookup(key);
                let (slot, bit) = (index as usize / 64, 1u64 << (index % 64));
                if let Some(word) = seen.get_mut(slot) {
                    let fresh = *word & bit == 0;
                    *word |= bit;
                    sum += if fresh { weight } else { 0.0 };
                }
            };
            let mut previous: Option<u64> = None;
            for span in words {
                let w = word_key(bytes, span.0 as usize, span.1 as usize);
                count(unigram(w));
                if let Some(p) = previous {
                    count(bigram(p, w));
                }
                previous = Some(w);
            }
            sum
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::normalize::normalize;

    fn logit(model: &LexicalModel, text: &str) -> f32 {
        let n = normalize(text);
        model.logit(&n.text, &n.words)
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

    #[test]
    fn bad_model_text_is_rejected_with_its_line() {
        for (text, line) in [
            ("bias x", 1),
            ("bias 1\nfoo bar", 2),
            ("bias 1\n1.0", 2),
            ("bias 1\n1.0 a b c", 2),
            ("bias 1\n1.0 a\n2.0 a", 3),
            ("bias 1\ninf a", 2),
            ("1.0 a", 1),
        ] {
            match LexicalModel::parse(text) {
                Err(SecurityError::Rules { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_builtin_model_parses_and_weighs_both_ways() {
        let model = LexicalModel::builtin().unwrap();
        assert!(model.len() > 1000);
        let weights: Vec<f32> = model
            .buckets
            .iter()
            .flat_map(|b| b.weights)
            .chain(model.overflow.values().map(|e| e.0))
            .collect();
        assert!(weights.iter().any(|&w| w > 0.5));
        assert!(weights.iter().any(|&w| w < -0.5));
    }
}
