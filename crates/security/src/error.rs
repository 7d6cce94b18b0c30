//! Errors of the security crate.

use agent_patterns_core::AgentError;

/// What can go wrong when using the security monitor and detectors.
///
/// Converts into [`AgentError`] (and, like every `std::error::Error`, into
/// `Box<dyn Error>`), so `?` works in agent code of either style.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A configuration value is out of range; the message names the field.
    #[error("invalid security configuration: {field}: {reason}")]
    Config {
        /// The offending field, e.g. `max_incidents`.
        field: &'static str,
        /// Why the value was rejected.
        reason: String,
    },
    /// No incident with this id is held by the monitor (never existed or evicted).
    #[error("incident {0} not found")]
    IncidentNotFound(u64),
    /// The requested status change is not allowed (e.g. acknowledging a resolved incident).
    #[error("incident {id}: cannot move from {from} to {to}")]
    InvalidTransition {
        /// The incident.
        id: u64,
        /// Its current status.
        from: &'static str,
        /// The status that was requested.
        to: &'static str,
    },
    /// A rule file could not be parsed; the message names the line.
    #[error("rule set line {line}: {reason}")]
    Rules {
        /// 1-based line number in the rule text.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The incident was recorded but writing it to the audit trail failed.
    #[error("incident {id} recorded but audit write failed: {reason}")]
    Audit {
        /// The incident that was recorded.
        id: u64,
        /// The audit logger's error.
        reason: String,
    },
}

impl SecurityError {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }
}

impl From<SecurityError> for AgentError {
    fn from(err: SecurityError) -> Self {
        match err {
            SecurityError::Config { .. } | SecurityError::Rules { .. } => {
                AgentError::Config(err.to_string())
            }
            SecurityError::IncidentNotFound(_) => AgentError::NotFound(err.to_string()),
            SecurityError::InvalidTransition { .. } => AgentError::InvalidInput(err.to_string()),
            SecurityError::Audit { .. } => AgentError::Audit(err.to_string()),
        }
    }
}
