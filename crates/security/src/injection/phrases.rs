//! Whole-word phrase matching over the normalised word view.
//!
//! Every lexicon phrase is a sequence of words (the last one optionally a
//! prefix). The index maps each distinct dictionary word to an id with one hash
//! lookup, and phrases form a trie over those ids. A scan splits the word view
//! at its single spaces, looks each word up once, and walks the trie only from
//! words that start some phrase, so its cost is one lookup per word plus a few
//! steps per candidate — most words of ordinary prose are in no phrase at all.
//! Single-word prefix entries (`instruct*`) are found through their first four
//! bytes, in an open-addressing table keyed by them. A lexical model's words
//! join the dictionary as words of no phrase, so that the one lookup finds
//! them too.

use std::ops::Range;

use rustc_hash::FxHashMap;

use super::engine::Hit;
use super::normalize::{Substitution, is_vowel};

/// No word, node or concept.
const NONE: u32 = u32::MAX;

/// The id [`PhraseIndex::scan`] gives a word that is in no phrase.
pub(crate) const NO_WORD: u32 = NONE;

#[derive(Debug, Default, Clone)]
struct Node {
    /// Concepts of the phrases that end at this node.
    concepts: Range<u32>,
    /// Next word (dictionary id) → child node, sorted by word id; empty once
    /// [`PhraseIndex::finish`] moved a long list into `PhraseIndex::wide`.
    children: Vec<(u32, u32)>,
    /// Whether the children are in `PhraseIndex::wide`.
    wide: bool,
    /// One bit per (hashed) child word id ([`child_bit`]): most words follow
    /// no phrase's word, and skip the search with one test.
    child_bits: u64,
    /// Phrases that end with a prefix word after this node.
    prefixes: Vec<Prefix>,
}

/// A word of at most eight bytes packed into an integer (words hold no NUL, so
/// the zero padding cannot collide), for a hash lookup without a byte compare.
fn short_key(word: &[u8]) -> Option<u64> {
    if word.len() > 8 {
        return None;
    }
    let mut buf = [0u8; 8];
    buf[..word.len()].copy_from_slice(word);
    Some(u64::from_le_bytes(buf))
}

/// Dictionary words of up to eight bytes (packed, see [`short_key`]) → word
/// id: an open-addressing table at most half full, so that a lookup, which a
/// scan makes for nearly every word, is a multiply, one load and a compare.
/// A slot holds its key and its id side by side, so a lookup touches one
/// cache line. Packed words are never 0 (words hold no NUL), which marks an
/// empty slot.
#[derive(Debug, Clone, Default)]
struct ShortTable {
    slots: Vec<ShortSlot>,
    len: usize,
    /// 64 − log2 of the slot count.
    shift: u32,
}

/// One slot of a [`ShortTable`]: a packed word (0 when empty) and its id.
#[derive(Debug, Clone, Copy)]
struct ShortSlot {
    key: u64,
    id: u32,
}

impl ShortSlot {
    const EMPTY: Self = Self { key: 0, id: NONE };
}

impl ShortTable {
    /// Fewest slots a table has once it holds a word.
    const MIN_SLOTS: usize = 16;

    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    fn get(&self, key: u64) -> Option<u32> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = self.slot(key);
        loop {
            let found = self.slots[at];
            if found.key == key {
                return Some(found.id);
            }
            if found.key == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    fn insert(&mut self, key: u64, id: u32) {
        debug_assert!(key != 0, "packed words are never 0");
        if (self.len + 1) * 2 > self.slots.len() {
            let slots = (self.slots.len() * 2).max(Self::MIN_SLOTS);
            let old = std::mem::replace(
                self,
                Self {
                    slots: vec![ShortSlot::EMPTY; slots],
                    len: 0,
                    shift: 64 - slots.trailing_zeros(),
                },
            );
            for (key, id) in old.iter() {
                self.insert(key, id);
            }
        }
        let mask = self.slots.len() - 1;
        let mut at = self.slot(key);
        while self.slots[at].key != 0 && self.slots[at].key != key {
            at = (at + 1) & mask;
        }
        if self.slots[at].key == 0 {
            self.len += 1;
        }
        self.slots[at] = ShortSlot { key, id };
    }

    fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.slots
            .iter()
            .filter(|slot| slot.key != 0)
            .map(|slot| (slot.key, slot.id))
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A prefix entry with its first (up to) eight bytes packed for a quick test.
#[derive(Debug, Clone)]
struct Prefix {
    head: u64,
    mask: u64,
    bytes: Box<[u8]>,
    concepts: Range<u32>,
}

impl Prefix {
    fn new(bytes: Box<[u8]>, concepts: Range<u32>) -> Self {
        let n = bytes.len().min(8);
        let mut head = [0u8; 8];
        head[..n].copy_from_slice(&bytes[..n]);
        let mask = if n == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * n)) - 1
        };
        Self {
            head: u64::from_le_bytes(head),
            mask,
            bytes,
            concepts,
        }
    }

    /// Its first four bytes (zero padded), the key `PhraseIndex::root_prefixes` is sorted by.
    fn key(&self) -> u32 {
        self.head as u32
    }

    /// Whether `word` (with `packed`, its first eight bytes) starts with this prefix.
    fn matches(&self, word: &[u8], packed: u64) -> bool {
        packed & self.mask == self.head
            && word.len() >= self.bytes.len()
            && (self.bytes.len() <= 8 || word.starts_with(&self.bytes))
    }
}

/// The first eight bytes of the word at `bytes[s..e]`, zero padded: one
/// unaligned load masked to the word where the text extends far enough.
pub(crate) fn head_at(bytes: &[u8], s: usize, e: usize) -> u64 {
    let len = (e - s).min(8);
    let mut buf = [0u8; 8];
    match bytes.get(s..s + 8) {
        Some(eight) => {
            buf.copy_from_slice(eight);
            let shift = 8 * (8 - len) as u32;
            u64::from_le_bytes(buf) & u64::MAX.checked_shr(shift).unwrap_or(0)
        }
        None => {
            buf[..len].copy_from_slice(&bytes[s..s + len]);
            u64::from_le_bytes(buf)
        }
    }
}

/// Shortest single-word prefix entry found through its first four bytes.
const KEYED_PREFIX: usize = 4;

/// Slots of `PhraseIndex::root_keys` per distinct first four bytes of the
/// prefix entries (at least): a mostly empty table, where a probe ends at
/// its first slot.
const ROOT_KEY_SLOTS_PER_KEY: usize = 8;

/// One slot of `PhraseIndex::root_keys`: the first four bytes of some prefix
/// entries, and where those entries are in `PhraseIndex::root_prefixes`
/// (an empty slot has `end` 0).
#[derive(Debug, Clone, Copy, Default)]
struct RootKey {
    key: u32,
    start: u32,
    end: u32,
}

/// The first slot of `key` in a `PhraseIndex::root_keys` table of `slots`
/// slots (a power of two).
fn root_key_slot(key: u32, slots: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B1) >> 7) as usize & (slots - 1)
}

/// Size of the word filter in 64-bit words (64 Kibit, 8 KiB).
const FILTER_WORDS: usize = 1024;

/// The filter bit of a word with first eight bytes `head` and length `len`.
fn filter_bit(head: u64, len: usize) -> usize {
    let key = head ^ (len as u64).rotate_right(8);
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize
}

/// Words an attack may write with their inner letters shuffled (the first and
/// last letters kept, which readers and models still recognise), read as
/// themselves. A curated list: real words that are anagrams of these with the
/// same ends would be misread, and none of these has one.
const SCRAMBLE_WORDS: [&str; 40] = [
    "ignore",
    "ignoring",
    "previous",
    "instructions",
    "instruction",
    "disregard",
    "forget",
    "reveal",
    "system",
    "prompt",
    "password",
    "secret",
    "override",
    "bypass",
    "restrictions",
    "guidelines",
    "above",
    "prior",
    "confidential",
    "jailbreak",
    "unrestricted",
    "developer",
    "pretend",
    "display",
    "print",
    "repeat",
    "verbatim",
    "initial",
    "hidden",
    "credentials",
    "delete",
    "execute",
    "command",
    "admin",
    "assistant",
    "rules",
    "policy",
    "policies",
    "filter",
    "safety",
];

/// The key of a word under inner-letter shuffling: its length, first and last
/// letters, and the multiset of the letters between (a sum of per-letter
/// constants, so any order gives the same key). `None` unless the word is 5
/// to 16 ASCII lowercase letters.
fn scramble_key(word: &[u8]) -> Option<u64> {
    let (&first, rest) = word.split_first()?;
    let (&last, middle) = rest.split_last()?;
    if !(5..=16).contains(&word.len()) || !word.iter().all(u8::is_ascii_lowercase) {
        return None;
    }
    let letters = middle.iter().fold(0u64, |sum, &b| {
        sum.wrapping_add(
            u64::from(b - b'a' + 1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(u32::from(b % 32)),
        )
    });
    Some(letters ^ (u64::from(first) << 56) ^ (u64::from(last) << 48) ^ ((word.len() as u64) << 40))
}

/// The bit of a word's (first, last) letter pair in `PhraseIndex::scrambled_ends`.
fn ends_bit(word: &[u8]) -> Option<usize> {
    let first = usize::from(word.first()?.checked_sub(b'a')?);
    let last = usize::from(word.last()?.checked_sub(b'a')?);
    (first < 26 && last < 26).then_some(first * 26 + last)
}

/// Most children of a trie node searched in its own sorted list; nodes with
/// more (words like "the" start hundreds of phrases) use the shared map.
const MAX_LISTED_CHILDREN: usize = 12;

/// The bit of word `id` in a node's `child_bits`.
fn child_bit(id: u32) -> u64 {
    1 << (id.wrapping_mul(0x9E37_79B1) >> 26)
}

/// The key of a child of `node` by word `id` in `PhraseIndex::wide`.
fn wide_key(node: u32, id: u32) -> u64 {
    (u64::from(node) << 32) | u64::from(id)
}

/// The compiled phrase dictionary.
#[derive(Debug, Default, Clone)]
pub(crate) struct PhraseIndex {
    /// Dictionary words of up to eight bytes (packed) → word id.
    short: ShortTable,
    /// Longer dictionary words → word id.
    words: FxHashMap<Box<[u8]>, u32>,
    /// One bit per (hashed) dictionary word: a word whose bit is clear is in
    /// no phrase, decided in a table small enough to stay in the L1 cache
    /// instead of a probe of the larger hash tables.
    filter: Vec<u64>,
    /// Word id → the trie node of phrases starting with that word, or `NONE`.
    roots: Vec<u32>,
    /// The children of nodes with many of them, by (node, word id) (see
    /// [`wide_key`]): one probe instead of a binary search as long as the list.
    wide: FxHashMap<u64, u32>,
    nodes: Vec<Node>,
    /// Concept lists referenced by nodes and prefixes.
    concept_pool: Vec<u32>,
    /// Single-word prefix entries of at least [`KEYED_PREFIX`] bytes, sorted
    /// by their first four bytes (stable: in the order they were added).
    root_prefixes: Vec<Prefix>,
    /// The entries of `root_prefixes` by their first four bytes: an open
    /// addressing table, so most words need one test to find they have none.
    root_keys: Vec<RootKey>,
    /// Shorter single-word prefix entries (none in the built-in rules),
    /// tried on every word.
    short_root_prefixes: Vec<Prefix>,
    /// Typoglycemia: the key ([`scramble_key`]) of each word of
    /// [`SCRAMBLE_WORDS`] in the dictionary → its word id, so a word written
    /// with its inner letters shuffled ("ignroe", "insturctions") reads as
    /// the word; and one bit per (first, last) letter pair of those words, so
    /// most unknown words skip the key.
    scrambled: FxHashMap<u64, u32>,
    scrambled_ends: [u64; 11],
    /// Per word id, one bit per [`Substitution`]: whether the word read
    /// through it is a dictionary word too (`erongi` → `ignore`).
    substituted: Vec<u8>,
    /// Consonant skeletons of dictionary words of three letters or more
    /// (`prvs` for `previous`) → the word: the first added where several
    /// share one.
    skeletons: FxHashMap<Box<[u8]>, Box<[u8]>>,
    /// How many ids phrase words have: ids from here on are words of a
    /// lexical model only ([`PhraseIndex::add_vocabulary`]), in no phrase.
    phrase_words: u32,
    /// Building only: concepts per node and per prefix before pooling.
    pending: Vec<Vec<u32>>,
    pending_prefixes: Vec<(u32, Box<[u8]>, Vec<u32>)>,
}

impl PhraseIndex {
    /// Add `phrase` (normalised words separated by single spaces) for `concept`;
    /// with `prefix`, its last word matches any word it begins.
    pub(crate) fn add(&mut self, phrase: &str, prefix: bool, concept: u32) {
        debug_assert!(
            self.wide.is_empty() && self.root_prefixes.is_empty(),
            "phrases are added before `finish`"
        );
        let words: Vec<&str> = phrase.split(' ').filter(|w| !w.is_empty()).collect();
        let Some((last, init)) = words.split_last() else {
            return;
        };
        let exact = if prefix { init } else { &words[..] };
        // Walk (creating) the exact words.
        let mut node = NONE;
        for word in exact {
            let id = self.word_id(word.as_bytes());
            node = if node == NONE {
                let root = self.roots[id as usize];
                if root == NONE {
                    let fresh = self.new_node();
                    self.roots[id as usize] = fresh;
                    fresh
                } else {
                    root
                }
            } else {
                let children = &self.nodes[node as usize].children;
                match children.binary_search_by_key(&id, |c| c.0) {
                    Ok(i) => children[i].1,
                    Err(i) => {
                        let fresh = self.new_node();
                        self.nodes[node as usize].children.insert(i, (id, fresh));
                        fresh
                    }
                }
            };
        }
        let bytes: Box<[u8]> = last.as_bytes().into();
        if !prefix {
            let list = &mut self.pending[node as usize];
            if !list.contains(&concept) {
                list.push(concept);
            }
            return;
        }
        match self
            .pending_prefixes
            .iter_mut()
            .find(|(n, p, _)| *n == node && *p == bytes)
        {
            Some((_, _, list)) => {
                if !list.contains(&concept) {
                    list.push(concept);
                }
            }
            None => self.pending_prefixes.push((node, bytes, vec![concept])),
        }
    }

    fn word_id(&mut self, word: &[u8]) -> u32 {
        let known = self.lookup(word);
        if known != NONE {
            return known;
        }
        if self.filter.is_empty() {
            self.filter = vec![0; FILTER_WORDS];
        }
        let bit = filter_bit(head_at(word, 0, word.len()), word.len());
        self.filter[bit / 64] |= 1 << (bit % 64);
        let id = u32::try_from(self.roots.len()).unwrap_or(NONE);
        match short_key(word) {
            Some(key) => self.short.insert(key, id),
            None => {
                self.words.insert(word.into(), id);
            }
        }
        self.roots.push(NONE);
        id
    }

    /// The id of a dictionary word, or `NONE`.
    fn lookup(&self, word: &[u8]) -> u32 {
        match short_key(word) {
            Some(key) => self.short.get(key),
            None => self.words.get(word).copied(),
        }
        .unwrap_or(NONE)
    }

    fn new_node(&mut self) -> u32 {
        self.nodes.push(Node::default());
        self.pending.push(Vec::new());
        u32::try_from(self.nodes.len() - 1).unwrap_or(NONE)
    }

    fn pool(pool: &mut Vec<u32>, concepts: &[u32]) -> Range<u32> {
        let start = u32::try_from(pool.len()).unwrap_or(NONE);
        pool.extend_from_slice(concepts);
        start..u32::try_from(pool.len()).unwrap_or(NONE)
    }

    /// Finish building: pool the concept lists, move long child lists to the
    /// shared map.
    pub(crate) fn finish(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (node, concepts) in pending.iter().enumerate() {
            self.nodes[node].concepts = Self::pool(&mut self.concept_pool, concepts);
        }
        let mut dictionary: Vec<(Vec<u8>, u32)> = self
            .short
            .iter()
            .map(|(key, id)| {
                let mut word = key.to_le_bytes().to_vec();
                word.retain(|&b| b != 0);
                (word, id)
            })
            .chain(self.words.iter().map(|(word, &id)| (word.to_vec(), id)))
            .collect();
        dictionary.sort_unstable_by_key(|&(_, id)| id);
        self.substituted = dictionary
            .iter()
            .map(|(word, _)| {
                Substitution::ALL
                    .iter()
                    .filter(|s| self.lookup(&s.apply(word)) != NONE)
                    .fold(0u8, |bits, &s| bits | 1 << s as u8)
            })
            .collect();
        for (word, _) in &dictionary {
            let skeleton: Box<[u8]> = word.iter().copied().filter(|&b| !is_vowel(b)).collect();
            if word.len() >= 3 && skeleton.len() >= 2 && skeleton.len() < word.len() {
                self.skeletons
                    .entry(skeleton)
                    .or_insert_with(|| word.as_slice().into());
            }
        }
        for word in SCRAMBLE_WORDS {
            let id = self.lookup(word.as_bytes());
            if let (true, Some(key), Some(bit)) = (
                id != NONE,
                scramble_key(word.as_bytes()),
                ends_bit(word.as_bytes()),
            ) {
                self.scrambled.insert(key, id);
                self.scrambled_ends[bit / 64] |= 1 << (bit % 64);
            }
        }
        for (index, node) in self.nodes.iter_mut().enumerate() {
            node.child_bits = node
                .children
                .iter()
                .fold(0, |bits, &(id, _)| bits | child_bit(id));
            if node.children.len() > MAX_LISTED_CHILDREN {
                let index = u32::try_from(index).unwrap_or(NONE);
                for (id, child) in std::mem::take(&mut node.children) {
                    self.wide.insert(wide_key(index, id), child);
                }
                node.wide = true;
            }
        }
        for (node, prefix, concepts) in std::mem::take(&mut self.pending_prefixes) {
            let range = Self::pool(&mut self.concept_pool, &concepts);
            let prefix = Prefix::new(prefix, range);
            if node != NONE {
                self.nodes[node as usize].prefixes.push(prefix);
            } else if prefix.bytes.len() < KEYED_PREFIX {
                self.short_root_prefixes.push(prefix);
            } else {
                self.root_prefixes.push(prefix);
            }
        }
        self.root_prefixes.sort_by_key(Prefix::key);
        let mut keys: Vec<RootKey> = Vec::new();
        for (at, prefix) in self.root_prefixes.iter().enumerate() {
            let at = u32::try_from(at).unwrap_or(NONE);
            match keys.last_mut() {
                Some(last) if last.key == prefix.key() => last.end = at + 1,
                _ => keys.push(RootKey {
                    key: prefix.key(),
                    start: at,
                    end: at + 1,
                }),
            }
        }
        let slots = (keys.len() * ROOT_KEY_SLOTS_PER_KEY).next_power_of_two();
        self.root_keys = vec![RootKey::default(); slots];
        for key in keys {
            let mut slot = root_key_slot(key.key, slots);
            while self.root_keys[slot].end != 0 {
                slot = (slot + 1) & (slots - 1);
            }
            self.root_keys[slot] = key;
        }
        self.phrase_words = u32::try_from(self.roots.len()).unwrap_or(NONE);
    }

    /// The id of `word` (a normalised word), added as a word of no phrase
    /// if it is not in the dictionary: how a lexical model's words share the
    /// one lookup a scan makes per word ([`PhraseIndex::scan`]'s `vocabulary`).
    pub(crate) fn add_vocabulary(&mut self, word: &[u8]) -> u32 {
        self.word_id(word)
    }

    /// Push `(concept, hit)` for the single-word prefix entries that word
    /// `i` of `spans` (`word`, with first eight bytes `head`) begins with.
    fn root_prefix_hits(
        &self,
        (word, head): (&[u8], u64),
        spans: &[(u32, u32)],
        i: usize,
        out: &mut Vec<(u32, Hit)>,
    ) {
        let keyed = if word.len() >= KEYED_PREFIX {
            self.root_keyed(head as u32)
        } else {
            &[]
        };
        for prefix in keyed.iter().chain(&self.short_root_prefixes) {
            if prefix.matches(word, head) {
                self.emit(&prefix.concepts, (spans, i, i), out);
            }
        }
    }

    /// The single-word prefix entries whose first four bytes are `key`.
    fn root_keyed(&self, key: u32) -> &[Prefix] {
        let slots = self.root_keys.len();
        if slots == 0 {
            return &[];
        }
        let mut slot = root_key_slot(key, slots);
        loop {
            let found = self.root_keys[slot];
            if found.end == 0 {
                return &[];
            }
            if found.key == key {
                return self
                    .root_prefixes
                    .get(found.start as usize..found.end as usize)
                    .unwrap_or(&[]);
            }
            slot = (slot + 1) & (slots - 1);
        }
    }

    /// Push `(concept, hit)` for each concept of `concepts` (a range of the
    /// pool), the hit being words `first..=last` of `spans`.
    fn emit(
        &self,
        concepts: &Range<u32>,
        (spans, first, last): (&[(u32, u32)], usize, usize),
        out: &mut Vec<(u32, Hit)>,
    ) {
        let hit = Hit::words(spans, first, last);
        for &c in &self.concept_pool[concepts.start as usize..concepts.end as usize] {
            out.push((c, hit));
        }
    }

    /// The child of trie node `n` (index `node`) by word `id`, or `NONE`.
    fn child(&self, n: &Node, node: u32, id: u32) -> u32 {
        if id == NONE || n.child_bits & child_bit(id) == 0 {
            NONE
        } else if n.wide {
            self.wide.get(&wide_key(node, id)).copied().unwrap_or(NONE)
        } else {
            n.children
                .binary_search_by_key(&id, |c| c.0)
                .map_or(NONE, |k| n.children[k].1)
        }
    }

    /// The dictionary word `word` is a shuffled spelling of (its inner
    /// letters in another order), if it is one of [`SCRAMBLE_WORDS`].
    fn unscrambled(&self, word: &[u8]) -> Option<u32> {
        let bit = ends_bit(word)?;
        if self.scrambled_ends[bit / 64] & (1 << (bit % 64)) == 0 {
            return None;
        }
        self.scrambled.get(&scramble_key(word)?).copied()
    }

    /// Whether `word` (a lowercase word of the normalised view) occurs in a
    /// phrase of the index as it is spelled.
    pub(crate) fn knows(&self, word: &[u8]) -> bool {
        if word.is_empty() {
            return false;
        }
        let bit = filter_bit(head_at(word, 0, word.len()), word.len());
        self.filter
            .get(bit / 64)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
            && self.lookup(word) < self.phrase_words
    }

    /// Whether dictionary word `id` read through `substitution` is a
    /// dictionary word too.
    pub(crate) fn reads_as_word(&self, id: u32, substitution: Substitution) -> bool {
        self.substituted
            .get(id as usize)
            .is_some_and(|bits| bits & (1 << substitution as u8) != 0)
    }

    /// The dictionary word whose consonant skeleton `word` is (`nstrctns` →
    /// `instructions`), if any.
    pub(crate) fn unskeleton(&self, word: &[u8]) -> Option<&[u8]> {
        self.skeletons.get(word).map(|w| &**w)
    }

    /// Whether the index holds no phrase.
    pub(crate) fn is_empty(&self) -> bool {
        self.short.is_empty()
            && self.nodes.is_empty()
            && self.root_prefixes.is_empty()
            && self.short_root_prefixes.is_empty()
    }

    /// Push `(concept, hit)` for every phrase occurrence in `text`, a word view
    /// whose words are at `words` (byte ranges, in order). Returns, per word,
    /// its dictionary id, [`NO_WORD`] for a word in no phrase (as spelled or
    /// shuffled); `vocabulary` gets, per word, its id as spelled whether or
    /// not it is in a phrase ([`PhraseIndex::add_vocabulary`]), [`NO_WORD`]
    /// for a word outside the dictionary.
    pub(crate) fn scan(
        &self,
        text: &str,
        words: &[(u32, u32)],
        out: &mut Vec<(u32, Hit)>,
        heads: &mut Vec<u64>,
        mut ids: Vec<u32>,
        vocabulary: &mut Vec<u32>,
    ) -> Vec<u32> {
        let bytes = text.as_bytes();
        let spans = words;
        // First eight bytes and dictionary id of every word, once per word
        // (`heads` is a buffer of the caller's, emptied here).
        heads.clear();
        heads.reserve(spans.len());
        ids.clear();
        ids.reserve(spans.len());
        vocabulary.clear();
        vocabulary.reserve(spans.len());
        for &(s, e) in spans {
            let (s, e) = (s as usize, e as usize);
            let head = head_at(bytes, s, e);
            let bit = filter_bit(head, e - s);
            let id = if self
                .filter
                .get(bit / 64)
                .is_none_or(|w| w & (1 << (bit % 64)) == 0)
            {
                None
            } else if e - s <= 8 {
                self.short.get(head)
            } else {
                self.words.get(&bytes[s..e]).copied()
            };
            let id = id.unwrap_or(NONE);
            vocabulary.push(id);
            let id = if id < self.phrase_words {
                Some(id)
            } else {
                self.unscrambled(&bytes[s..e])
            };
            heads.push(head);
            ids.push(id.unwrap_or(NONE));
        }
        for (i, &(s, e)) in spans.iter().enumerate() {
            let word = &bytes[s as usize..e as usize];
            self.root_prefix_hits((word, heads[i]), spans, i, out);
            let id = ids[i];
            if id == NONE {
                continue;
            }
            let mut node = self.roots[id as usize];
            let mut j = i;
            while node != NONE {
                let n = &self.nodes[node as usize];
                self.emit(&n.concepts, (spans, i, j), out);
                let Some(&(ns, ne)) = spans.get(j + 1) else {
                    break;
                };
                let (ns, ne) = (ns as usize, ne as usize);
                if !n.prefixes.is_empty() {
                    let next = &bytes[ns..ne];
                    for prefix in &n.prefixes {
                        if prefix.matches(next, heads[j + 1]) {
                            self.emit(&prefix.concepts, (spans, i, j + 1), out);
                        }
                    }
                }
                node = self.child(n, node, ids[j + 1]);
                j += 1;
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, bool, u32)]) -> PhraseIndex {
        let mut index = PhraseIndex::default();
        for &(p, prefix, c) in entries {
            index.add(p, prefix, c);
        }
        index.finish();
        index
    }

    fn hits(index: &PhraseIndex, text: &str) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        let words = crate::injection::normalize::word_spans(text);
        let _ = index.scan(
            text,
            &words,
            &mut out,
            &mut Vec::new(),
            Vec::new(),
            &mut Vec::new(),
        );
        out.into_iter()
            .map(|(c, h)| (c, text[h.start..h.end].to_owned()))
            .collect()
    }

    #[test]
    fn matches_whole_words_and_phrases_only() {
        let index = index(&[
            ("ignore", false, 0),
            ("do not follow", false, 1),
            ("do not", false, 2),
        ]);
        assert_eq!(
            hits(&index, "ignored ignore do not follow x"),
            vec![
                (0, "ignore".to_owned()),
                (2, "do not".to_owned()),
                (1, "do not follow".to_owned()),
            ]
        );
        assert!(hits(&index, "do no follow").is_empty());
    }

    #[test]
    fn a_word_that_starts_many_phrases_finds_each_of_them() {
        // Forty phrases after "the": that node's children sit in the shared
        // map, not in a list of its own.
        let seconds: Vec<String> = (0..40)
            .map(|i| format!("w{}x", char::from(b'a' + i % 26)) + &"y".repeat(usize::from(i / 26)))
            .collect();
        let mut entries: Vec<(String, bool, u32)> = seconds
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("the {w}"), false, u32::try_from(i).unwrap()))
            .collect();
        entries.push(("the wax final".to_owned(), false, 99));
        let mut index = PhraseIndex::default();
        for (p, prefix, c) in &entries {
            index.add(p, *prefix, *c);
        }
        index.finish();
        assert!(
            index.nodes.iter().any(|n| n.wide),
            "no node moved to the map"
        );
        for (i, w) in seconds.iter().enumerate() {
            let text = format!("see the {w} and the end");
            assert_eq!(
                hits(&index, &text),
                vec![(u32::try_from(i).unwrap(), format!("the {w}"))]
            );
        }
        assert_eq!(
            hits(&index, "the wax final"),
            vec![(0, "the wax".to_owned()), (99, "the wax final".to_owned())]
        );
        assert!(hits(&index, "the wxq the").is_empty());
    }

    #[test]
    fn scrambled_trigger_words_are_read_as_the_words() {
        let index = index(&[("ignore previous", false, 0), ("trail", false, 1)]);
        assert_eq!(
            hits(&index, "ingore pverious"),
            vec![(0, "ingore pverious".to_owned())]
        );
        // Only the curated words: "trial" is not read as "trail", the ends
        // must stay, and the length must match.
        assert!(hits(&index, "trial").is_empty());
        assert!(hits(&index, "gnorie previous").is_empty());
        assert!(hits(&index, "ignoore previous").is_empty());
        assert_eq!(scramble_key(b"ignore"), scramble_key(b"ingroe"));
        assert_ne!(scramble_key(b"ignore"), scramble_key(b"ignora"));
        assert_eq!(scramble_key(b"igno"), None);
        assert_eq!(scramble_key(b"IGNORE"), None);
    }

    #[test]
    fn prefix_entries_cover_the_rest_of_their_word() {
        let index = index(&[("instruct", true, 0), ("that precede", true, 1)]);
        assert_eq!(
            hits(&index, "the instructions that preceded"),
            vec![
                (0, "instructions".to_owned()),
                (1, "that preceded".to_owned())
            ]
        );
        assert!(hits(&index, "reinstruct that").is_empty());
    }

    /// Every occurrence, found the slow way: each phrase tried at each word.
    fn naive(entries: &[(String, bool, u32)], text: &str) -> Vec<(u32, usize, usize)> {
        let words: Vec<&str> = text.split(' ').collect();
        let mut out = Vec::new();
        for (phrase, prefix, concept) in entries {
            let parts: Vec<&str> = phrase.split(' ').collect();
            for i in 0..words.len() {
                let Some(window) = words.get(i..i + parts.len()) else {
                    continue;
                };
                let ok = window.iter().zip(&parts).enumerate().all(|(k, (w, p))| {
                    if *prefix && k == parts.len() - 1 {
                        w.starts_with(p)
                    } else {
                        w == p
                    }
                });
                if ok {
                    out.push((*concept, i, i + parts.len() - 1));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

        #[test]
        fn finds_exactly_what_a_naive_search_finds(
            entries in proptest::collection::vec(
                (proptest::collection::vec("(ab|a|b|ba|abc|bb|abcd|abcde|abcdefghij|abcdefghijk)", 1..4), proptest::bool::ANY, 0u32..6),
                1..12,
            ),
            text in proptest::collection::vec("(ab|a|b|ba|abc|bb|abcd|abcdefghij|abcdefghijkl)", 1..40),
        ) {
            let entries: Vec<(String, bool, u32)> =
                entries.into_iter().map(|(words, prefix, c)| (words.join(" "), prefix, c)).collect();
            let text = text.join(" ");
            let mut index = PhraseIndex::default();
            for (phrase, prefix, concept) in &entries {
                index.add(phrase, *prefix, *concept);
            }
            index.finish();
            let words = crate::injection::normalize::word_spans(&text);
            let mut found = Vec::new();
            let _ = index.scan(&text, &words, &mut found, &mut Vec::new(), Vec::new(), &mut Vec::new());
            let mut found: Vec<(u32, usize, usize)> = found
                .into_iter()
                .map(|(c, h)| {
                    let first = words.iter().position(|w| w.0 as usize == h.start).unwrap();
                    let last = words.iter().position(|w| w.1 as usize == h.end).unwrap();
                    (c, first, last)
                })
                .collect();
            found.sort_unstable();
            found.dedup();
            proptest::prop_assert_eq!(found, naive(&entries, &text));
        }
    }

    #[test]
    fn the_short_word_table_finds_every_word_it_holds_and_nothing_else() {
        let mut table = ShortTable::default();
        assert_eq!(table.get(1), None);
        let key = |i: u64| i.wrapping_mul(0x0101_0101) | 1;
        for i in 0..10_000u64 {
            table.insert(key(i), u32::try_from(i).unwrap());
        }
        // A word added again keeps one slot, with its new id.
        table.insert(key(7), 70);
        assert_eq!(table.iter().count(), 10_000);
        assert!(table.slots.len() >= 20_000, "at most half full");
        for i in 0..10_000u64 {
            let want = if i == 7 {
                70
            } else {
                u32::try_from(i).unwrap()
            };
            assert_eq!(table.get(key(i)), Some(want));
        }
        assert_eq!(table.get(key(10_001) + 2), None);
    }

    #[test]
    fn vocabulary_words_get_ids_but_stay_out_of_phrases() {
        let mut index = index(&[("ignore rules", false, 0)]);
        let extra = index.add_vocabulary(b"pineapple");
        assert_eq!(index.add_vocabulary(b"rules"), index.lookup(b"rules"));
        assert!(index.knows(b"rules"));
        assert!(
            !index.knows(b"pineapple"),
            "a vocabulary word is no rule word"
        );
        let text = "pineapple rules unknown";
        let words = crate::injection::normalize::word_spans(text);
        let mut vocabulary = Vec::new();
        let ids = index.scan(
            text,
            &words,
            &mut Vec::new(),
            &mut Vec::new(),
            Vec::new(),
            &mut vocabulary,
        );
        assert_eq!(ids, vec![NO_WORD, index.lookup(b"rules"), NO_WORD]);
        assert_eq!(vocabulary, vec![extra, index.lookup(b"rules"), NO_WORD]);
    }

    #[test]
    fn one_phrase_may_feed_several_concepts() {
        let index = index(&[
            ("rules", false, 3),
            ("rules", false, 5),
            ("rules", false, 3),
        ]);
        assert_eq!(
            hits(&index, "rules"),
            vec![(3, "rules".to_owned()), (5, "rules".to_owned())]
        );
    }
}
