//! Configuration errors shared by every primitive.

/// A configuration value was rejected; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {component} configuration: {field} {problem}")]
pub struct ConfigError {
    /// Which primitive (`"rate limiter"`, `"circuit breaker"`, …).
    pub component: &'static str,
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(
        component: &'static str,
        field: &'static str,
        problem: impl Into<String>,
    ) -> Self {
        Self {
            component,
            field,
            problem: problem.into(),
        }
    }
}

impl From<ConfigError> for agent_patterns_core::AgentError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.to_string())
    }
}
