//! A linear model over the words and word pairs of the normalised text: the
//! evidence phrase rules miss when an attack is worded afresh.
//!
//! The model is data, like the rules: one weight per word or pair of adjacent
//! words (as they appear in [`normalize`](super::normalize())'s word view),
//! plus a bias. A window's logit is the bias plus the weights of the distinct
//! words and pairs it contains (each counts once, however often it occurs), so
//! scoring is one lookup per word and per pair: linear in the input. Entries
//! are found through 31-bit fingerprints, so an n-gram outside the model takes
//! some entry's weight with a probability below 2⁻³¹ per n-gram.
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
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::normalize::normalize;
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
    /// Per group of keys ([`LexicalModel::group_of`]): the displacement that
    /// puts each of the group's keys in a slot of its own
    /// ([`LexicalModel::slot_of`]), or [`UNPLACED`]. A perfect hash: a
    /// lookup reads one displacement and one slot (its only branch, on
    /// `UNPLACED`, is never taken for a model built from ordinary text).
    displacements: Vec<u16>,
    /// The weight table; an entry's index (for counting it once) is its slot.
    slots: Vec<Slot>,
    /// How many slots there are (`slots.len()`, as the range of [`LexicalModel::slot_of`]).
    slot_count: u64,
    /// Entries of groups no displacement could place (none in practice) →
    /// (weight, index past the slots).
    overflow: KeyMap<(f32, u32)>,
    /// The index of no entry: one past every entry's index.
    none: u32,
}

/// Buffers of [`LexicalModel::logit`], kept between calls on a thread; their
/// size depends on the model, not on the text.
#[derive(Default)]
struct Scratch {
    /// The (entry index, weight) of each n-gram of a block that has an entry.
    found: Vec<(u32, f32)>,
    /// One bit per entry index: which entries were counted already.
    seen: Vec<u64>,
    /// One bit per word of `seen`: which were set in this call (and are
    /// cleared at its end).
    touched: Vec<u64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The identity of the word `text[s..e]`: its bytes packed when they fit in
/// eight (words hold no NUL, so the zero padding cannot collide), a hash of
/// them otherwise.
fn word_key(text: &[u8], s: usize, e: usize) -> u64 {
    if e - s <= 8 {
        head_at(text, s, e)
    } else {
        // A 64-bit hash on every target, eight bytes at a time.
        let word = text.get(s..e).unwrap_or(&[]);
        let mut h = (word.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for chunk in word.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            h = mix(h ^ u64::from_le_bytes(buf)).rotate_left(23);
        }
        h
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
    bigram_after(unigram(first), second)
}

/// [`bigram`] from the first word's [`unigram`] key, which a scan has at hand.
fn bigram_after(first_unigram: u64, second: u64) -> u64 {
    mix(first_unigram ^ second.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15)
}

/// One slot of the weight table; an empty slot has fingerprint 0.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    fingerprint: u32,
    weight: f32,
}

/// The fingerprint of a key in its slot (never 0).
fn fingerprint(key: u64) -> u32 {
    (key as u32) | 1
}

/// The displacement of a group whose keys are in the overflow map.
const UNPLACED: u16 = u16::MAX;

/// Keys per group of the perfect hash, on average.
const KEYS_PER_GROUP: usize = 4;

/// Largest group whose displacement is searched for.
const MAX_GROUP: usize = 32;

/// N-grams looked up before their hits are counted: bounds the scratch buffer.
const BLOCK: usize = 256;

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
        let mut bias_line = None;
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
        let bias = bias.ok_or(SecurityError::Rules {
            line: 0,
            reason: "the model has no bias line".into(),
        })?;
        Ok(Self::build(bias, &entries, MAX_GROUP))
    }

    /// The model with `entries`; groups of more than `max_group` keys (only
    /// hostile model text makes them) go to the overflow map unsearched, so
    /// building stays fast.
    fn build(bias: f32, entries: &KeyMap<(f32, u32)>, max_group: usize) -> Self {
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let groups = entries
            .len()
            .div_ceil(KEYS_PER_GROUP)
            .max(1)
            .next_power_of_two();
        // Four slots in five taken: displacements are found fast, and the
        // table of a model of a few thousand entries stays in the L1 cache.
        let slots = (entries.len() + entries.len() / 4).max(2);
        let mut model = Self {
            bias,
            entries: count,
            displacements: vec![0; groups],
            slots: vec![Slot::default(); slots],
            slot_count: slots as u64,
            overflow: KeyMap::default(),
            none: 0,
        };
        // In entry order, so a model's layout does not depend on hashing.
        let mut sorted: Vec<(u64, (f32, u32))> = entries.iter().map(|(k, v)| (*k, *v)).collect();
        sorted.sort_by_key(|e| e.1.1);
        let mut members: Vec<Vec<(u64, f32)>> = vec![Vec::new(); groups];
        for (key, (weight, _)) in sorted {
            members[model.group_of(key)].push((key, weight));
        }
        // Largest groups first, while most slots are free.
        let mut order: Vec<usize> = (0..groups).collect();
        order.sort_by_key(|&g| std::cmp::Reverse(members[g].len()));
        let mut places: Vec<usize> = Vec::new();
        for g in order {
            let keys = &members[g];
            if keys.is_empty() {
                continue;
            }
            let searchable = keys.len() <= max_group;
            let placed = (0..UNPLACED).filter(|_| searchable).find(|&d| {
                places.clear();
                for &(key, _) in keys {
                    let at = model.slot_of(key, d);
                    if model.slots[at].fingerprint != 0 || places.contains(&at) {
                        return false;
                    }
                    places.push(at);
                }
                true
            });
            match placed {
                Some(d) => {
                    model.displacements[g] = d;
                    for (&(key, weight), &at) in keys.iter().zip(&places) {
                        model.slots[at] = Slot {
                            fingerprint: fingerprint(key),
                            weight,
                        };
                    }
                }
                None => {
                    model.displacements[g] = UNPLACED;
                    for &(key, weight) in keys {
                        let index = slots + model.overflow.len();
                        let index = u32::try_from(index).unwrap_or(u32::MAX);
                        model.overflow.insert(key, (weight, index));
                    }
                }
            }
        }
        model.none = u32::try_from(slots + model.overflow.len()).unwrap_or(u32::MAX);
        model
    }

    /// The group of `key` (bits 32 and up; the fingerprint is the low bits).
    fn group_of(&self, key: u64) -> usize {
        (key >> 32) as usize & (self.displacements.len() - 1)
    }

    /// The slot of `key` under displacement `d`.
    fn slot_of(&self, key: u64, d: u16) -> usize {
        let moved = key ^ (u64::from(d) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The top 32 bits of the mixed key, scaled to the slot count.
        let high = moved.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 32;
        ((high * self.slot_count) >> 32) as usize
    }

    /// The weight and entry index of `key`, and whether it has an entry.
    #[inline(always)]
    fn lookup(&self, key: u64) -> (f32, u32, bool) {
        let d = self.displacements[self.group_of(key)];
        if d == UNPLACED {
            return match self.overflow.get(&key) {
                Some(&(weight, index)) => (weight, index, true),
                None => (0.0, self.none, false),
            };
        }
        let at = self.slot_of(key, d);
        let slot = self.slots.get(at).copied().unwrap_or_default();
        // Selected without a branch: whether an n-gram has an entry is as
        // unpredictable as the text.
        let hit = slot.fingerprint == fingerprint(key);
        let weight = f32::from_bits(slot.weight.to_bits() & u32::from(hit).wrapping_neg());
        (weight, u32::try_from(at).unwrap_or(u32::MAX), hit)
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
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch {
                found,
                seen,
                touched,
            } = &mut *scratch;
            // All clear: fresh, or cleared through `touched` after the last call.
            let bits = (self.none as usize).div_ceil(64);
            if seen.len() < bits {
                seen.resize(bits, 0);
                touched.resize(seen.len().div_ceil(64), 0);
            }
            found.resize(BLOCK + 1, (0, 0.0));
            let mut sum = self.bias;
            // The previous word's unigram key, from which its pair's key follows.
            let mut previous: Option<u64> = None;
            for block in words.chunks(BLOCK / 2) {
                // First the block's n-grams' entries, appended without a
                // branch (the slot past the last hit is overwritten by the
                // next n-gram): the lookups do not wait on one another.
                let mut hits = 0usize;
                let mut record = |key: u64, found: &mut [(u32, f32)]| {
                    let (weight, index, hit) = self.lookup(key);
                    if let Some(slot) = found.get_mut(hits) {
                        *slot = (index, weight);
                    }
                    hits += usize::from(hit);
                };
                for span in block {
                    let w = word_key(bytes, span.0 as usize, span.1 as usize);
                    let key = unigram(w);
                    record(key, found);
                    if let Some(p) = previous {
                        record(bigram_after(p, w), found);
                    }
                    previous = Some(key);
                }
                // Then the hits, each entry counted once per call.
                let mut block_sum = 0.0f32;
                for &(index, weight) in found.iter().take(hits) {
                    let (slot, bit) = (index as usize / 64, 1u64 << (index % 64));
                    if let Some(word) = seen.get_mut(slot) {
                        let fresh = *word & bit == 0;
                        *word |= bit;
                        block_sum += if fresh { weight } else { 0.0 };
                    }
                    if let Some(word) = touched.get_mut(slot / 64) {
                        *word |= 1 << (slot % 64);
                    }
                }
                sum += block_sum;
            }
            for (at, word) in touched.iter_mut().enumerate() {
                let mut bits = std::mem::take(word);
                while bits != 0 {
                    if let Some(w) = seen.get_mut(at * 64 + bits.trailing_zeros() as usize) {
                        *w = 0;
                    }
                    bits &= bits - 1;
                }
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
            overflow in proptest::bool::ANY,
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
            let mut model = LexicalModel::parse(&model_text).unwrap();
            if overflow {
                // Every group in the overflow map: the path hostile model text takes.
                let mut keyed = KeyMap::default();
                for (i, (g, w)) in entries.iter().enumerate() {
                    let words: Vec<&[u8]> = g.split(' ').map(str::as_bytes).collect();
                    let key_of = |w: &[u8]| word_key(w, 0, w.len());
                    let key = match *words.as_slice() {
                        [a, b] => bigram(key_of(a), key_of(b)),
                        [w, ..] => unigram(key_of(w)),
                        [] => continue,
                    };
                    keyed.insert(key, (*w, u32::try_from(i).unwrap()));
                }
                model = LexicalModel::build(-0.5, &keyed, 0);
                proptest::prop_assert_eq!(model.overflow.len(), entries.len());
            }
            let text: Vec<String> = text.into_iter().map(word).collect();
            let text = text.join(" ");
            let expected = reference(&entries, -0.5, &text);
            let got = logit(&model, &text);
            proptest::prop_assert!((got - expected).abs() < 1e-3, "{} != {}", got, expected);
        }
    }

    #[test]
    fn the_builtin_model_parses_and_weighs_both_ways() {
        let model = LexicalModel::builtin().unwrap();
        assert!(model.len() > 1000);
        let weights: Vec<f32> = model
            .slots
            .iter()
            .map(|s| s.weight)
            .chain(model.overflow.values().map(|e| e.0))
            .collect();
        assert!(weights.iter().any(|&w| w > 0.5));
        assert!(weights.iter().any(|&w| w < -0.5));
    }
}
