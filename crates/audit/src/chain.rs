//! The hash chain: a canonical encoding of each event, its SHA-256, and the
//! verifier that walks a run of events and finds the first one that does not fit.
//!
//! Event `n` stores `prev_hash = hash(n - 1)` and
//! `hash = SHA-256(encode(n, prev_hash, event))`. Changing any hashed field of
//! any stored event, removing one, or moving one to another position changes a
//! hash that a later event (or the stored hash itself) disagrees with.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::AuditEvent;

/// Version of the canonical encoding; it is the first byte hashed, so a future
/// encoding can never produce a hash that verifies under this one.
pub const ENCODING_VERSION: u8 = 1;

/// A SHA-256 digest in the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChainHash([u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the very first event (32 zero bytes).
    pub const GENESIS: Self = Self([0; 32]);

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads a digest from a byte slice, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(hex_digits: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut out).ok()?;
        Some(Self(out))
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl Serialize for ChainHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// An event's place in the chain, set by the logger that stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainLink {
    /// Position in the chain, starting at 1, without gaps.
    pub sequence: u64,
    /// Hash of the event at `sequence - 1` ([`ChainHash::GENESIS`] for the first).
    pub prev_hash: ChainHash,
    /// This event's hash: SHA-256 over [`canonical_encoding`].
    pub hash: ChainHash,
}

/// The last link of a chain: what the next event will chain onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence of the last stored event (0 for an empty chain).
    pub sequence: u64,
    /// Hash of the last stored event ([`ChainHash::GENESIS`] for an empty chain).
    pub hash: ChainHash,
}

impl ChainHead {
    /// The head of an empty chain.
    pub const EMPTY: Self = Self {
        sequence: 0,
        hash: ChainHash::GENESIS,
    };

    /// Links `event` onto this head and advances the head past it.
    pub fn append(&mut self, event: &mut AuditEvent) -> ChainLink {
        let sequence = self.sequence + 1;
        let hash = event_hash(event, sequence, &self.hash);
        let link = ChainLink {
            sequence,
            prev_hash: self.hash,
            hash,
        };
        event.chain = Some(link);
        *self = Self { sequence, hash };
        link
    }
}

impl Default for ChainHead {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// The bytes hashed for an event at `sequence` chained onto `prev_hash`.
///
/// Version 1 layout: the version byte, `sequence` (u64 big-endian), `prev_hash`
/// (32 bytes), the id (16 bytes), the timestamp in microseconds since the Unix
/// epoch (i64 big-endian), then `event_type`, `actor`, `action` as
/// length-prefixed UTF-8, `success` as one byte, `session_id`, `source_ip`,
/// `resource` each as a presence byte followed by a length-prefixed string, and
/// the metadata as an entry count followed by length-prefixed key/value pairs
/// in key order. Lengths and counts are u64 big-endian. Every variable-length
/// part carries its length, so two different events never share an encoding.
pub fn canonical_encoding(event: &AuditEvent, sequence: u64, prev_hash: &ChainHash) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + event.actor.len() + event.action.len());
    out.push(ENCODING_VERSION);
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(prev_hash.as_bytes());
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(&event.timestamp.timestamp_micros().to_be_bytes());
    put_str(&mut out, event.event_type.as_str());
    put_str(&mut out, &event.actor);
    put_str(&mut out, &event.action);
    out.push(u8::from(event.success));
    for field in [&event.session_id, &event.source_ip, &event.resource] {
        match field {
            Some(value) => {
                out.push(1);
                put_str(&mut out, value);
            }
            None => out.push(0),
        }
    }
    put_len(&mut out, event.metadata.len());
    for (key, value) in &event.metadata {
        put_str(&mut out, key);
        put_str(&mut out, value);
    }
    out
}

/// SHA-256 of [`canonical_encoding`].
pub fn event_hash(event: &AuditEvent, sequence: u64, prev_hash: &ChainHash) -> ChainHash {
    ChainHash(Sha256::digest(canonical_encoding(event, sequence, prev_hash)).into())
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    put_len(out, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// Which part of the chain to verify, by sequence number (both ends inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VerifyRange {
    /// First sequence to check; `None` starts at the oldest stored event.
    pub from: Option<u64>,
    /// Last sequence to check; `None` runs to the head.
    pub to: Option<u64>,
}

impl VerifyRange {
    /// The whole stored chain.
    pub const fn all() -> Self {
        Self {
            from: None,
            to: None,
        }
    }

    /// From `from` to `to`, inclusive.
    pub const fn between(from: u64, to: u64) -> Self {
        Self {
            from: Some(from),
            to: Some(to),
        }
    }

    /// Whether `sequence` lies inside the range.
    pub fn contains(&self, sequence: u64) -> bool {
        self.from.is_none_or(|from| sequence >= from) && self.to.is_none_or(|to| sequence <= to)
    }
}

/// What is wrong with the first event that does not fit the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainFaultKind {
    /// The event's content no longer hashes to its stored hash: a field was
    /// changed, or the event was moved to another position.
    Altered,
    /// The event does not link to the one before it: an event before it was
    /// removed, inserted or reordered.
    BrokenLink,
    /// Sequence numbers jump: the events in between were removed.
    Missing {
        /// The sequence that should have come next.
        expected: u64,
    },
    /// The event has no chain link at all.
    Unchained,
    /// The store's head says the chain is longer than the events found: the
    /// newest events were cut off.
    Truncated {
        /// The sequence the head records.
        head: u64,
    },
}

/// The first event that does not fit the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainFault {
    /// Sequence of the offending event as stored.
    pub sequence: u64,
    /// Id of the offending event (`None` when the fault is an absence, as
    /// with [`ChainFaultKind::Truncated`]).
    pub id: Option<Uuid>,
    /// What is wrong.
    pub kind: ChainFaultKind,
}

impl fmt::Display for ChainFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.id.map_or_else(|| "?".to_owned(), |id| id.to_string());
        let sequence = self.sequence;
        match self.kind {
            ChainFaultKind::Altered => {
                write!(f, "event {id} (sequence {sequence}) was altered or moved")
            }
            ChainFaultKind::BrokenLink => {
                write!(
                    f,
                    "event {id} (sequence {sequence}) does not link to its predecessor"
                )
            }
            ChainFaultKind::Missing { expected } => {
                write!(
                    f,
                    "events {expected}..{sequence} are missing before event {id}"
                )
            }
            ChainFaultKind::Unchained => write!(f, "event {id} has no chain link"),
            ChainFaultKind::Truncated { head } => {
                write!(
                    f,
                    "events after sequence {sequence} up to the head {head} are missing"
                )
            }
        }
    }
}

/// The result of walking a range of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerification {
    /// How many events were checked.
    pub checked: u64,
    /// The last event that verified: anchor this (store it elsewhere, sign
    /// it, publish it) to later prove that nothing after it was cut off.
    pub last_verified: Option<ChainHead>,
    /// The first event that does not fit, if any.
    pub fault: Option<ChainFault>,
}

impl ChainVerification {
    /// Whether every checked event fits the chain.
    pub fn is_valid(&self) -> bool {
        self.fault.is_none()
    }
}

/// Checks events one by one in sequence order and stops at the first fault.
///
/// Stores feed it their events page by page; it holds only the last link.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    previous: Option<ChainHead>,
    checked: u64,
    last_verified: Option<ChainHead>,
    fault: Option<ChainFault>,
}

impl ChainVerifier {
    /// A verifier whose first event must link onto `previous`.
    ///
    /// Pass `Some(ChainHead::EMPTY)` when the range starts at sequence 1,
    /// the stored predecessor when there is one, and `None` when the
    /// predecessor is gone (evicted or dropped by retention): the first
    /// event's `prev_hash` is then trusted as the anchor.
    pub fn new(previous: Option<ChainHead>) -> Self {
        Self {
            previous,
            checked: 0,
            last_verified: None,
            fault: None,
        }
    }

    /// Checks the next event; returns `false` once a fault has been found
    /// (later events are not checked: the first fault is the finding).
    pub fn push(&mut self, event: &AuditEvent) -> bool {
        if self.fault.is_some() {
            return false;
        }
        let Some(link) = event.chain else {
            self.fault = Some(ChainFault {
                sequence: 0,
                id: Some(event.id),
                kind: ChainFaultKind::Unchained,
            });
            return false;
        };
        let fault_kind = if event_hash(event, link.sequence, &link.prev_hash) != link.hash {
            Some(ChainFaultKind::Altered)
        } else {
            match self.previous {
                Some(prev) if link.sequence != prev.sequence + 1 => Some(ChainFaultKind::Missing {
                    expected: prev.sequence + 1,
                }),
                Some(prev) if link.prev_hash != prev.hash => Some(ChainFaultKind::BrokenLink),
                None if link.sequence == 1 && link.prev_hash != ChainHash::GENESIS => {
                    Some(ChainFaultKind::BrokenLink)
                }
                _ => None,
            }
        };
        self.checked += 1;
        if let Some(kind) = fault_kind {
            self.fault = Some(ChainFault {
                sequence: link.sequence,
                id: Some(event.id),
                kind,
            });
            return false;
        }
        let head = ChainHead {
            sequence: link.sequence,
            hash: link.hash,
        };
        self.previous = Some(head);
        self.last_verified = Some(head);
        true
    }

    /// The verdict for a walk that reached the store's `head`: also reports
    /// events cut off the end, and a last event whose hash disagrees with the
    /// head (rewritten after it was chained).
    pub fn finish_at_head(mut self, head: ChainHead) -> ChainVerification {
        if self.fault.is_none() {
            let last = self.previous.unwrap_or(ChainHead::EMPTY);
            if last.sequence < head.sequence {
                self.fault = Some(ChainFault {
                    sequence: last.sequence,
                    id: None,
                    kind: ChainFaultKind::Truncated {
                        head: head.sequence,
                    },
                });
            } else if last.sequence == head.sequence && last.hash != head.hash {
                self.fault = Some(ChainFault {
                    sequence: last.sequence,
                    id: None,
                    kind: ChainFaultKind::Altered,
                });
                self.last_verified = None;
            }
        }
        self.finish()
    }

    /// The verdict.
    pub fn finish(self) -> ChainVerification {
        ChainVerification {
            checked: self.checked,
            last_verified: self.last_verified,
            fault: self.fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditEventType;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut head = ChainHead::EMPTY;
        (0..n)
            .map(|i| {
                let mut e = AuditEvent::new(AuditEventType::DataAccess, "u", format!("a{i}"), true);
                head.append(&mut e);
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> ChainVerification {
        let mut v = ChainVerifier::new(Some(ChainHead::EMPTY));
        for e in events {
            v.push(e);
        }
        v.finish()
    }

    #[test]
    fn intact_chain_verifies_and_reports_its_head() {
        let events = chain(5);
        let report = verify(&events);
        assert!(report.is_valid());
        assert_eq!(report.checked, 5);
        let last = events[4].chain.unwrap();
        assert_eq!(
            report.last_verified,
            Some(ChainHead {
                sequence: 5,
                hash: last.hash
            })
        );
    }

    #[test]
    fn changed_field_is_reported_as_altered() {
        let mut events = chain(5);
        events[2].action = "rewritten".into();
        let fault = verify(&events).fault.unwrap();
        assert_eq!((fault.sequence, fault.kind), (3, ChainFaultKind::Altered));
        assert_eq!(fault.id, Some(events[2].id));
    }

    #[test]
    fn removed_event_is_reported_as_missing_at_the_next_one() {
        let mut events = chain(5);
        events.remove(1);
        let fault = verify(&events).fault.unwrap();
        assert_eq!(fault.kind, ChainFaultKind::Missing { expected: 2 });
        assert_eq!(fault.sequence, 3);
    }

    #[test]
    fn swapped_events_are_reported_at_the_first_position() {
        let mut events = chain(5);
        events.swap(1, 3);
        let fault = verify(&events).fault.unwrap();
        assert_eq!(fault.id, Some(events[1].id));
        // Renumbering the moved event to hide the gap breaks its hash instead.
        let mut events = chain(5);
        events.swap(1, 3);
        events[1].chain.as_mut().unwrap().sequence = 2;
        assert_eq!(verify(&events).fault.unwrap().kind, ChainFaultKind::Altered);
    }

    #[test]
    fn rehashed_forgery_breaks_the_link_of_the_next_event() {
        let mut events = chain(4);
        events[1].actor = "mallory".into();
        let link = events[1].chain.unwrap();
        let mut forged = ChainHead {
            sequence: 1,
            hash: link.prev_hash,
        };
        forged.append(&mut events[1]);
        let fault = verify(&events).fault.unwrap();
        assert_eq!(
            (fault.sequence, fault.kind),
            (3, ChainFaultKind::BrokenLink)
        );
    }

    #[test]
    fn first_event_must_start_from_genesis() {
        let mut events = chain(2);
        events[0].chain.as_mut().unwrap().prev_hash = ChainHash::from_bytes([7; 32]);
        let mut v = ChainVerifier::new(None);
        v.push(&events[0]);
        assert!(!v.finish().is_valid());
    }

    #[test]
    fn walk_that_stops_short_of_the_head_reports_truncation() {
        let events = chain(4);
        let last = events[3].chain.unwrap();
        let head = ChainHead {
            sequence: 4,
            hash: last.hash,
        };
        let mut v = ChainVerifier::new(Some(ChainHead::EMPTY));
        for e in &events[..3] {
            v.push(e);
        }
        let fault = v.finish_at_head(head).fault.unwrap();
        assert_eq!(fault.kind, ChainFaultKind::Truncated { head: 4 });
        assert_eq!(fault.sequence, 3);

        let mut v = ChainVerifier::new(Some(ChainHead::EMPTY));
        for e in &events {
            v.push(e);
        }
        assert!(v.clone().finish_at_head(head).is_valid());
        let forged_head = ChainHead {
            sequence: 4,
            hash: ChainHash::from_bytes([1; 32]),
        };
        assert_eq!(
            v.finish_at_head(forged_head).fault.unwrap().kind,
            ChainFaultKind::Altered
        );
    }

    #[test]
    fn hash_hex_round_trips() {
        let events = chain(1);
        let hash = events[0].chain.unwrap().hash;
        assert_eq!(ChainHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(ChainHash::from_slice(hash.as_bytes()), Some(hash));
        assert_eq!(ChainHash::from_slice(&[1, 2, 3]), None);
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(serde_json::from_str::<ChainHash>(&json).unwrap(), hash);
    }
}
