//! Errors of the health crate.

use agent_patterns_core::AgentError;

/// What can go wrong when configuring health checks.
///
/// Running a check never fails: a failing, hanging or panicking check is
/// reported as an unhealthy [`ComponentHealth`](crate::ComponentHealth).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// A configuration field has an invalid value.
    #[error("invalid health configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why its value is rejected.
        reason: &'static str,
    },
    /// More checks were registered than `max_checks` allows.
    #[error(
        "cannot register health check `{component}`: the limit of {max_checks} checks (`max_checks`) is reached"
    )]
    TooManyChecks {
        /// The check that was refused.
        component: String,
        /// The configured limit.
        max_checks: usize,
    },
}

impl HealthError {
    pub(crate) fn invalid_config(field: &'static str, reason: &'static str) -> Self {
        Self::InvalidConfig { field, reason }
    }
}

impl From<HealthError> for AgentError {
    fn from(err: HealthError) -> Self {
        AgentError::Config(err.to_string())
    }
}
