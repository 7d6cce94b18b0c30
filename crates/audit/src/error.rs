//! Errors of the audit trail.

use std::time::Duration;

use agent_patterns_core::AgentError;

/// Everything that can go wrong while logging or reading audit events.
///
/// Converts into [`AgentError`], so `logger.log(event).await?` works in agent
/// code; it is also a `std::error::Error + Send + Sync`, so `?` works in
/// functions returning `Box<dyn Error>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The event breaks a limit or contains what the store cannot keep; the
    /// message names the field.
    #[error("invalid audit event: {0}")]
    InvalidEvent(String),

    /// A configuration value is out of range.
    #[error("invalid audit configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The write queue stayed full for the whole wait: the store cannot keep up
    /// (or its database is down). The event was not logged.
    #[error("audit queue full ({capacity} events) for {waited:?}")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
        /// How long the caller waited for room.
        waited: Duration,
    },

    /// The event was accepted but not confirmed durable within the deadline.
    /// It may or may not have been stored; logging it again is safe (stores
    /// are idempotent by event id).
    #[error("audit event not confirmed within {0:?}")]
    Timeout(Duration),

    /// The logger was closed and accepts no more events.
    #[error("audit logger is closed")]
    Closed,

    /// The storage backend is unreachable.
    #[error("audit store unavailable: {0}")]
    Unavailable(String),

    /// The storage backend refused the operation.
    #[error("audit storage error: {0}")]
    Storage(String),

    /// A stored record could not be decoded.
    #[error("corrupt audit record: {0}")]
    Corrupt(String),
}

impl AuditError {
    /// Whether trying again later (or on another replica) may succeed.
    /// `Closed` counts: a closed logger belongs to a process that is shutting down.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Self::QueueFull { .. } | Self::Timeout(_) | Self::Closed | Self::Unavailable(_)
        )
    }
}

impl From<AuditError> for AgentError {
    fn from(err: AuditError) -> Self {
        match err {
            AuditError::InvalidEvent(msg) => AgentError::InvalidInput(msg),
            AuditError::InvalidConfig { .. } => AgentError::Config(err.to_string()),
            AuditError::Timeout(duration) => AgentError::Timeout { duration },
            AuditError::QueueFull { .. } | AuditError::Closed | AuditError::Unavailable(_) => {
                AgentError::Unavailable(err.to_string())
            }
            AuditError::Storage(_) | AuditError::Corrupt(_) => AgentError::Audit(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_into_agent_error_with_matching_temporariness() {
        let cases = [
            AuditError::InvalidEvent("actor too long".into()),
            AuditError::InvalidConfig {
                field: "capacity",
                reason: "must be at least 1".into(),
            },
            AuditError::QueueFull {
                capacity: 4,
                waited: Duration::from_secs(1),
            },
            AuditError::Timeout(Duration::from_secs(5)),
            AuditError::Closed,
            AuditError::Unavailable("connection refused".into()),
            AuditError::Storage("permission denied".into()),
            AuditError::Corrupt("bad hash length".into()),
        ];
        for err in cases {
            let temporary = err.is_temporary();
            let agent: AgentError = err.clone().into();
            assert_eq!(agent.is_temporary(), temporary, "{err:?} -> {agent:?}");
        }
        let agent: AgentError = AuditError::InvalidConfig {
            field: "capacity",
            reason: "must be at least 1".into(),
        }
        .into();
        assert!(agent.to_string().contains("capacity"));
    }

    #[test]
    fn question_mark_works_for_agent_and_boxed_errors() {
        fn agent() -> Result<(), AgentError> {
            Err(AuditError::Closed)?
        }
        fn boxed() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err(AuditError::Closed)?
        }
        assert!(matches!(agent(), Err(AgentError::Unavailable(_))));
        assert!(boxed().is_err());
    }
}
