//! What an audit event is: who did what, when, with which outcome.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chain::ChainLink;
use crate::error::AuditError;

/// The kind of thing an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEventType {
    /// Login, logout, token refresh.
    Authentication,
    /// Permission checks, granted or denied.
    Authorization,
    /// Reads and writes of user or business data.
    DataAccess,
    /// Settings and configuration changes.
    Configuration,
    /// Security incidents and policy decisions.
    Security,
    /// Calls to an LLM.
    LlmInteraction,
}

impl AuditEventType {
    /// Every event type, in declaration order.
    pub const ALL: [Self; 6] = [
        Self::Authentication,
        Self::Authorization,
        Self::DataAccess,
        Self::Configuration,
        Self::Security,
        Self::LlmInteraction,
    ];

    /// The stable lowercase name stored in databases and hashed into the chain:
    /// `"authentication"`, `"authorization"`, `"data_access"`, `"configuration"`,
    /// `"security"`, `"llm_interaction"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Authorization => "authorization",
            Self::DataAccess => "data_access",
            Self::Configuration => "configuration",
            Self::Security => "security",
            Self::LlmInteraction => "llm_interaction",
        }
    }

    /// A dense index in `0..6`, for per-type tables.
    pub(crate) const fn index(self) -> usize {
        match self {
            Self::Authentication => 0,
            Self::Authorization => 1,
            Self::DataAccess => 2,
            Self::Configuration => 3,
            Self::Security => 4,
            Self::LlmInteraction => 5,
        }
    }
}

impl fmt::Display for AuditEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditEventType {
    type Err = AuditError;

    /// Parses the stored name (`"data_access"`) or the variant name
    /// (`"DataAccess"`), ignoring ASCII case, so `AgentEnvironment::log_audit`'s
    /// string argument maps onto a type.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = || {
            s.bytes()
                .filter(|b| *b != b'_' && *b != b'-')
                .map(|b| b.to_ascii_lowercase())
        };
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().bytes().filter(|b| *b != b'_').eq(wanted()))
            .ok_or_else(|| AuditError::InvalidEvent(format!("unknown audit event type `{s}`")))
    }
}

/// One entry of the audit trail.
///
/// Build it with [`AuditEvent::new`] and the `with_*` methods; the logger
/// redacts secret-looking metadata, checks the size limits and sets
/// [`chain`](Self::chain) when it stores the event.
///
/// The timestamp is kept at microsecond precision (what PostgreSQL stores), so
/// an event reads back exactly as it was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Time-ordered unique id (UUID v7). Stores are idempotent by id: logging
    /// the same id twice keeps the first copy.
    pub id: Uuid,
    /// When the event happened, UTC, microsecond precision.
    pub timestamp: DateTime<Utc>,
    /// What kind of event this is.
    pub event_type: AuditEventType,
    /// Who acted: a user id, a service name, an API key id.
    pub actor: String,
    /// What they did: `"login"`, `"send_message"`, `"delete_document"`.
    pub action: String,
    /// Whether the action succeeded.
    pub success: bool,
    /// The session the action belongs to.
    pub session_id: Option<String>,
    /// Where the request came from.
    pub source_ip: Option<String>,
    /// What was acted on: `"conversation:123"`.
    pub resource: Option<String>,
    /// Free-form details; keys that look like secrets are redacted on logging.
    pub metadata: BTreeMap<String, String>,
    /// The event's place in the hash chain; `None` until a logger stores it.
    pub chain: Option<ChainLink>,
}

impl AuditEvent {
    /// A new event with a fresh UUID v7 and the current UTC time.
    pub fn new(
        event_type: AuditEventType,
        actor: impl Into<String>,
        action: impl Into<String>,
        success: bool,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            timestamp: Utc::now().trunc_subsecs(6),
            event_type,
            actor: actor.into(),
            action: action.into(),
            success,
            session_id: None,
            source_ip: None,
            resource: None,
            metadata: BTreeMap::new(),
            chain: None,
        }
    }

    /// Sets the session id.
    #[must_use]
    pub fn with_session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets the source address. Takes anything displayable, so a `&str`, a
    /// `String`, an `IpAddr` or a `SocketAddr` all work.
    #[must_use]
    pub fn with_source_ip(mut self, source_ip: impl fmt::Display) -> Self {
        self.source_ip = Some(source_ip.to_string());
        self
    }

    /// Sets the resource acted on.
    #[must_use]
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Adds one metadata entry (a later value for the same key replaces the earlier one).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Replaces the timestamp (truncated to microseconds), for importing events
    /// that happened earlier.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp.trunc_subsecs(6);
        self
    }

    /// The chain sequence number, if the event has been stored.
    pub fn sequence(&self) -> Option<u64> {
        self.chain.as_ref().map(|link| link.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_round_trip_through_from_str() {
        for t in AuditEventType::ALL {
            assert_eq!(t.as_str().parse::<AuditEventType>().unwrap(), t);
            assert_eq!(format!("{t:?}").parse::<AuditEventType>().unwrap(), t);
            assert_eq!(t.to_string(), t.as_str());
            assert_eq!(AuditEventType::ALL[t.index()], t);
        }
        assert!("login".parse::<AuditEventType>().is_err());
    }

    #[test]
    fn event_type_serialises_as_its_stored_name() {
        let json = serde_json::to_string(&AuditEventType::LlmInteraction).unwrap();
        assert_eq!(json, "\"llm_interaction\"");
    }

    #[test]
    fn builder_sets_every_field_and_ids_are_time_ordered() {
        let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        let a = AuditEvent::new(AuditEventType::Authentication, "u1", "login", true)
            .with_session_id(String::from("s1"))
            .with_source_ip(ip)
            .with_resource("account:1")
            .with_metadata("method", "password");
        let b = AuditEvent::new(AuditEventType::Authentication, "u1", "logout", true);
        assert_eq!(a.session_id.as_deref(), Some("s1"));
        assert_eq!(a.source_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(a.resource.as_deref(), Some("account:1"));
        assert_eq!(
            a.metadata.get("method").map(String::as_str),
            Some("password")
        );
        assert_eq!(a.id.get_version_num(), 7);
        assert!(a.id < b.id, "UUID v7 ids sort by creation time");
        assert_eq!(a.timestamp.timestamp_subsec_nanos() % 1_000, 0);
        assert!(a.chain.is_none());
    }
}
