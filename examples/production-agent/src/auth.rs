//! API-key authentication. Keys are kept only as SHA-256 digests and compared
//! in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Their own conversations.
    User,
    /// Everything, including the admin and debug endpoints.
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user id conversations belong to.
    pub id: String,
    /// What they may do.
    pub role: Role,
}

/// Split a `user_id:role:key` entry.
pub fn parse_key_entry(entry: &str) -> Result<(String, Role, String), String> {
    let mut parts = entry.splitn(3, ':');
    let (Some(user), Some(role), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("each entry must be user_id:role:key".into());
    };
    let user = user.trim();
    if user.is_empty()
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(format!(
            "user id {user:?} must be non-empty ASCII letters, digits or -_.@"
        ));
    }
    let role = match role.trim() {
        "user" => Role::User,
        "admin" => Role::Admin,
        other => return Err(format!("role {other:?} must be user or admin")),
    };
    if key.len() < 8 {
        return Err(format!("the key of {user:?} must be at least 8 characters"));
    }
    Ok((user.to_owned(), role, key.to_owned()))
}

/// The configured keys, as digests.
#[derive(Debug)]
pub struct ApiKeys {
    entries: Vec<([u8; 32], User)>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Keys from `user_id:role:key` entries (already validated by the config).
    pub fn from_entries(entries: &[String]) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|e| parse_key_entry(e).map(|(id, role, key)| (digest(&key), User { id, role })))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add a random admin key and return it (shown once at start when no key
    /// is configured, so the server never runs open).
    pub fn generate_admin(&mut self) -> String {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let key = hex::encode(bytes);
        self.entries.push((
            digest(&key),
            User {
                id: "admin".into(),
                role: Role::Admin,
            },
        ));
        key
    }

    /// The caller a presented key belongs to. Every configured key is
    /// compared, in constant time, so timing does not reveal which matched.
    pub fn authenticate(&self, presented: &str) -> Option<User> {
        let d = digest(presented);
        let mut found = None;
        for (candidate, user) in &self.entries {
            if constant_time_eq(candidate, &d) && found.is_none() {
                found = Some(user.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_authenticate_their_users_only() {
        let keys = ApiKeys::from_entries(&[
            "alice:user:alice-secret".into(),
            "ops:admin:ops-secret-1".into(),
        ])
        .unwrap();
        assert_eq!(keys.authenticate("alice-secret").unwrap().id, "alice");
        assert_eq!(keys.authenticate("ops-secret-1").unwrap().role, Role::Admin);
        assert!(keys.authenticate("alice-secre").is_none());
        assert!(keys.authenticate("").is_none());
    }

    #[test]
    fn malformed_entries_are_refused() {
        assert!(parse_key_entry("alice:user").is_err());
        assert!(parse_key_entry("alice:root:long-enough").is_err());
        assert!(parse_key_entry("alice:user:short").is_err());
        assert!(parse_key_entry(":user:long-enough").is_err());
        assert!(parse_key_entry("al ice:user:long-enough").is_err());
        // The key itself may contain ':'.
        assert_eq!(
            parse_key_entry("a:admin:x:y:z:w:v:u").unwrap().2,
            "x:y:z:w:v:u"
        );
    }

    #[test]
    fn generated_admin_keys_work_and_differ() {
        let mut keys = ApiKeys::from_entries(&[]).unwrap();
        let a = keys.generate_admin();
        let b = keys.generate_admin();
        assert_ne!(a, b);
        assert_eq!(keys.authenticate(&a).unwrap().role, Role::Admin);
    }
}
