//! What a logger does to an event before storing it: redact secret-looking
//! metadata (OWASP logging guidance: never write passwords, tokens or keys to
//! a log) and enforce size limits, so one event can neither leak a credential
//! nor blow up the store.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::event::AuditEvent;

/// The value stored in place of a redacted metadata value.
pub const REDACTED: &str = "[REDACTED]";

/// Redaction and size rules applied to every event on logging.
///
/// A metadata key is secret-looking when one of
/// [`redact_keys`](Self::redact_keys) ends a word of it. Keys and fragments
/// are compared lowercased, with `-`, `.` and spaces read as `_` and a `_`
/// between camelCase humps: `X-Api-Key`, `refreshToken`, `userpassword` and
/// `Authorization` are secret-looking under the defaults; `input_tokens`,
/// `author` and `passwordless` are not. The value is replaced by
/// [`REDACTED`]; the key is kept, so the trail still shows that, say, a
/// password was supplied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventPolicy {
    /// Fragments that mark a metadata key as secret (matched as substrings,
    /// case-insensitively).
    pub redact_keys: Vec<String>,
    /// Longest accepted text field (actor, action, session id, source IP,
    /// resource, metadata key or value), in bytes.
    pub max_field_bytes: usize,
    /// Most metadata entries per event.
    pub max_metadata_entries: usize,
}

impl Default for EventPolicy {
    fn default() -> Self {
        Self {
            redact_keys: DEFAULT_REDACT_KEYS
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            max_field_bytes: 8 * 1024,
            max_metadata_entries: 64,
        }
    }
}

/// The default secret-looking key fragments.
pub const DEFAULT_REDACT_KEYS: &[&str] = &[
    "password",
    "passwords",
    "passwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "authorization",
    "auth",
    "bearer",
    "cookie",
    "cookies",
    "credential",
    "credentials",
    "session_key",
    "credit_card",
    "card_number",
    "cvv",
];

impl EventPolicy {
    /// Checks the limits; the error names the offending field.
    pub fn validate(&self) -> Result<(), AuditError> {
        if self.max_field_bytes == 0 {
            return Err(AuditError::InvalidConfig {
                field: "max_field_bytes",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(empty) = self.redact_keys.iter().position(|k| k.trim().is_empty()) {
            return Err(AuditError::InvalidConfig {
                field: "redact_keys",
                reason: format!("entry {empty} is empty and would redact every key"),
            });
        }
        Ok(())
    }

    /// Whether `key` looks like it holds a secret.
    pub fn is_secret_key(&self, key: &str) -> bool {
        let key = normalise(key);
        let key = key.as_bytes();
        // A fragment must end where a word of the key ends.
        let word_ends = || {
            key.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'_')
                .map(|(i, _)| i)
                .chain(std::iter::once(key.len()))
        };
        // The last bytes of the key's words, as a 256-bit set, rule out most
        // fragments by their own last byte before any fragment is normalised
        // or compared.
        let mut word_last = [0u64; 4];
        for end in word_ends() {
            if let Some(&b) = end.checked_sub(1).and_then(|i| key.get(i)) {
                word_last[usize::from(b / 64)] |= 1 << (b % 64);
            }
        }
        self.redact_keys.iter().any(|fragment| {
            // An ASCII letter or digit ends the normalised fragment as itself,
            // lowercased; anything else takes the general path.
            if let Some(last) = fragment
                .as_bytes()
                .last()
                .filter(|b| b.is_ascii_alphanumeric())
                .map(u8::to_ascii_lowercase)
                && word_last[usize::from(last / 64)] & (1 << (last % 64)) == 0
            {
                return false;
            }
            let fragment = normalise(fragment);
            !fragment.is_empty() && word_ends().any(|end| key[..end].ends_with(fragment.as_bytes()))
        })
    }

    /// Checks the limits and redacts secret-looking metadata, returning the
    /// event as it will be stored.
    ///
    /// Also rejects NUL characters, which PostgreSQL text cannot hold, so an
    /// event is accepted or refused the same way by every store.
    pub fn apply(&self, mut event: AuditEvent) -> Result<AuditEvent, AuditError> {
        self.check_fields(&event)?;
        for (key, value) in &mut event.metadata {
            self.check_field("metadata key", key)?;
            if self.is_secret_key(key) {
                REDACTED.clone_into(value);
            } else {
                self.check_field("metadata value", value)?;
            }
        }
        event.chain = None;
        Ok(event)
    }

    /// The checks of [`apply`](Self::apply) without the copy: whether the
    /// event would be accepted.
    pub fn check(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.check_fields(event)?;
        for (key, value) in &event.metadata {
            self.check_field("metadata key", key)?;
            if !self.is_secret_key(key) {
                self.check_field("metadata value", value)?;
            }
        }
        Ok(())
    }

    /// Every check but the metadata entries' own.
    fn check_fields(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.check_field("actor", &event.actor)?;
        self.check_field("action", &event.action)?;
        for (name, value) in [
            ("session_id", &event.session_id),
            ("source_ip", &event.source_ip),
            ("resource", &event.resource),
        ] {
            if let Some(value) = value {
                self.check_field(name, value)?;
            }
        }
        if event.metadata.len() > self.max_metadata_entries {
            return Err(AuditError::InvalidEvent(format!(
                "metadata has {} entries, more than max_metadata_entries = {}",
                event.metadata.len(),
                self.max_metadata_entries
            )));
        }
        Ok(())
    }

    fn check_field(&self, name: &str, value: &str) -> Result<(), AuditError> {
        if value.len() > self.max_field_bytes {
            return Err(AuditError::InvalidEvent(format!(
                "{name} is {} bytes, more than max_field_bytes = {}",
                value.len(),
                self.max_field_bytes
            )));
        }
        if value.contains('\0') {
            return Err(AuditError::InvalidEvent(format!(
                "{name} contains a NUL character"
            )));
        }
        Ok(())
    }
}

/// Lowercase, separators as `_`, and a `_` where a lowercase letter or digit
/// is followed by an uppercase one (`refreshToken` -> `refresh_token`).
/// Borrowed when `key` is already in that form (lowercase ASCII, digits, `_`).
fn normalise(key: &str) -> Cow<'_, str> {
    if key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Cow::Borrowed(key);
    }
    Cow::Owned(normalise_owned(key))
}

fn normalise_owned(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev_lower = false;
    for c in key.chars() {
        match c {
            '-' | '.' | ' ' | '_' => {
                out.push('_');
                prev_lower = false;
            }
            c if c.is_uppercase() => {
                if prev_lower {
                    out.push('_');
                }
                out.extend(c.to_lowercase());
                prev_lower = false;
            }
            c => {
                out.push(c);
                prev_lower = c.is_lowercase() || c.is_ascii_digit();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditEventType;

    fn event() -> AuditEvent {
        AuditEvent::new(AuditEventType::Authentication, "u", "login", true)
    }

    #[test]
    fn secret_looking_keys_are_redacted_and_others_kept() {
        let policy = EventPolicy::default();
        let stored = policy
            .apply(
                event()
                    .with_metadata("password", "hunter2")
                    .with_metadata("X-Api-Key", "sk-123")
                    .with_metadata("Authorization", "Bearer abc")
                    .with_metadata("refresh_token", "r-1")
                    .with_metadata("method", "password"),
            )
            .unwrap();
        assert_eq!(stored.metadata["password"], REDACTED);
        assert_eq!(stored.metadata["X-Api-Key"], REDACTED);
        assert_eq!(stored.metadata["Authorization"], REDACTED);
        assert_eq!(stored.metadata["refresh_token"], REDACTED);
        assert_eq!(stored.metadata["method"], "password");
    }

    #[test]
    fn custom_fragments_match_in_any_case_and_spelling() {
        let policy = EventPolicy {
            redact_keys: vec![
                "ClientSecret".into(),
                "PIN".into(),
                "ssn".into(),
                "otp-".into(),
            ],
            ..EventPolicy::default()
        };
        for key in ["client_secret", "myClientSecret", "user_pin", "SSN", "otp_"] {
            assert!(policy.is_secret_key(key), "{key} should be secret");
        }
        for key in ["client_secrets", "pinned", "ssns", "otp"] {
            assert!(!policy.is_secret_key(key), "{key} should not be secret");
        }
    }

    #[test]
    fn only_fragments_that_end_a_word_match() {
        let policy = EventPolicy::default();
        for key in [
            "refreshToken",
            "userpassword",
            "SESSION_COOKIE",
            "x.auth",
            "oauth",
        ] {
            assert!(policy.is_secret_key(key), "{key} should be secret");
        }
        for key in [
            "input_tokens",
            "max_tokens",
            "author",
            "passwordless",
            "model",
        ] {
            assert!(!policy.is_secret_key(key), "{key} should not be secret");
        }
    }

    #[test]
    fn redaction_list_is_configurable() {
        let policy = EventPolicy {
            redact_keys: vec!["email".into()],
            ..EventPolicy::default()
        };
        let stored = policy
            .apply(
                event()
                    .with_metadata("user_email", "a@b.c")
                    .with_metadata("password", "p"),
            )
            .unwrap();
        assert_eq!(stored.metadata["user_email"], REDACTED);
        assert_eq!(stored.metadata["password"], "p");
    }

    #[test]
    fn oversized_or_nul_fields_are_rejected_by_name() {
        let policy = EventPolicy {
            max_field_bytes: 8,
            ..EventPolicy::default()
        };
        let err = policy
            .apply(event().with_resource("x".repeat(9)))
            .unwrap_err();
        assert!(err.to_string().contains("resource"), "{err}");
        let err = policy.apply(event().with_session_id("a\0b")).unwrap_err();
        assert!(err.to_string().contains("session_id"), "{err}");
        let policy = EventPolicy {
            max_metadata_entries: 1,
            ..EventPolicy::default()
        };
        let err = policy
            .apply(event().with_metadata("a", "1").with_metadata("b", "2"))
            .unwrap_err();
        assert!(err.to_string().contains("max_metadata_entries"), "{err}");
    }

    #[test]
    fn invalid_policies_are_rejected_by_field() {
        let err = EventPolicy {
            max_field_bytes: 0,
            ..EventPolicy::default()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(
            err,
            AuditError::InvalidConfig {
                field: "max_field_bytes",
                ..
            }
        ));
        let err = EventPolicy {
            redact_keys: vec![" ".into()],
            ..EventPolicy::default()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(
            err,
            AuditError::InvalidConfig {
                field: "redact_keys",
                ..
            }
        ));
    }
}
