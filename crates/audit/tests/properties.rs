//! Properties of the canonical encoding and of redaction, on arbitrary events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use agent_patterns_audit::{
    AuditEvent, AuditEventType, ChainHash, EventPolicy, REDACTED, canonical_encoding,
};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use uuid::Uuid;

fn event_type() -> impl Strategy<Value = AuditEventType> {
    proptest::sample::select(AuditEventType::ALL.to_vec())
}

/// Short strings over a tiny alphabet, so that fields often collide and
/// bytes often could "move" between neighbouring fields.
fn text() -> impl Strategy<Value = String> {
    "[ab\u{e9}:]{0,3}"
}

prop_compose! {
    fn event()(
        id in 0u128..4,
        micros in -2i64..2,
        event_type in event_type(),
        actor in text(),
        action in text(),
        success in any::<bool>(),
        session_id in proptest::option::of(text()),
        source_ip in proptest::option::of(text()),
        resource in proptest::option::of(text()),
        metadata in proptest::collection::btree_map(text(), text(), 0..3),
    ) -> AuditEvent {
        AuditEvent {
            id: Uuid::from_u128(id),
            timestamp: DateTime::<Utc>::from_timestamp_micros(1_700_000_000_000_000 + micros).unwrap(),
            event_type,
            actor,
            action,
            success,
            session_id,
            source_ip,
            resource,
            metadata,
            chain: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_encoding_is_injective(
        a in event(), b in event(),
        seq_a in 0u64..3, seq_b in 0u64..3,
        prev_a in 0u8..2, prev_b in 0u8..2,
    ) {
        let (prev_a, prev_b) = (ChainHash::from_bytes([prev_a; 32]), ChainHash::from_bytes([prev_b; 32]));
        let same_input = a == b && seq_a == seq_b && prev_a == prev_b;
        let same_encoding =
            canonical_encoding(&a, seq_a, &prev_a) == canonical_encoding(&b, seq_b, &prev_b);
        prop_assert_eq!(same_input, same_encoding);
    }

    #[test]
    fn redaction_never_leaks_a_value_under_a_secret_looking_key(
        prefix in "[a-zA-Z0-9]{0,6}",
        separator in proptest::sample::select(vec!["", "_", "-", "."]),
        fragment in proptest::sample::select(agent_patterns_audit::DEFAULT_REDACT_KEYS.to_vec()),
        upper in any::<bool>(),
        suffix in proptest::option::of("[a-z]{1,5}"),
        value in "\\PC{1,40}",
        other in proptest::collection::btree_map("[a-z]{1,8}", "\\PC{0,10}", 0..4),
    ) {
        let fragment = if upper { fragment.to_uppercase() } else { fragment.to_owned() };
        let mut key = format!("{prefix}{separator}{fragment}");
        if let Some(suffix) = suffix {
            key = format!("{key}_{suffix}");
        }
        let policy = EventPolicy::default();
        let mut metadata: BTreeMap<String, String> = other;
        metadata.insert(key.clone(), value.clone());
        let mut event = AuditEvent::new(AuditEventType::Authentication, "u", "login", true);
        event.metadata = metadata;
        match policy.apply(event) {
            Ok(stored) => {
                prop_assert_eq!(stored.metadata.get(&key).map(String::as_str), Some(REDACTED));
                for (k, v) in &stored.metadata {
                    if policy.is_secret_key(k) {
                        prop_assert_eq!(v.as_str(), REDACTED);
                    }
                }
            }
            // Refused events (a NUL in another value) are not stored at all.
            Err(err) => prop_assert!(!err.to_string().contains(&value)),
        }
    }
}
