//! The error type every agent operation returns.

use std::time::Duration;

use http::StatusCode;

/// Convenient result alias: `Result<T>` is `Result<T, AgentError>`.
///
/// The error parameter can still be named (`Result<T, MyError>`), so this alias
/// does not get in the way of other error types when glob-imported.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// Everything that can go wrong while an agent serves a request.
///
/// Each variant maps to an HTTP status with [`AgentError::status_code`] and says
/// whether trying again may help with [`AgentError::is_temporary`]. The resilience
/// primitives convert their own errors into the matching variant, so `?` works
/// across the whole call path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The LLM provider rejected the call or answered with something unusable.
    /// Not retried: the same request would fail the same way.
    #[error("LLM error: {0}")]
    Llm(String),

    /// The LLM provider is overloaded, unreachable or failed on its side (HTTP 429,
    /// 5xx, connection reset). Retrying or switching to a fallback provider may help.
    #[error("LLM unavailable: {0}")]
    LlmUnavailable(String),

    /// A tool failed.
    #[error("Tool execution error: {tool}: {error}")]
    Tool {
        /// Name of the tool that failed.
        tool: String,
        /// What went wrong.
        error: String,
    },

    /// A rate limiter refused the call.
    #[error("Rate limited")]
    RateLimited,

    /// A circuit breaker is open and fails calls fast.
    #[error("Circuit breaker open")]
    CircuitBreakerOpen,

    /// A bulkhead had no free permit within its wait time, or its wait queue was full.
    #[error("Bulkhead full")]
    BulkheadFull,

    /// An operation did not finish in time. `duration` is the limit that was hit;
    /// it is zero when the limit is unknown (for example after converting a bare
    /// `tokio::time::error::Elapsed`).
    #[error("{}", timeout_message(*duration))]
    Timeout {
        /// The time limit that expired.
        duration: Duration,
    },

    /// The caller sent something the agent cannot accept.
    #[error("Invalid input: {0}")]
    InvalidInput(String),

    /// A message was refused by a security check (for example a prompt-injection detector).
    #[error("Blocked by security policy: {0}")]
    SecurityViolation(String),

    /// The caller did not prove who they are.
    #[error("Unauthorized: {0}")]
    Unauthorized(String),

    /// The caller is known but not allowed to do this.
    #[error("Forbidden: {0}")]
    Forbidden(String),

    /// The thing asked for does not exist (or is not visible to the caller).
    #[error("Not found: {0}")]
    NotFound(String),

    /// A dependency or the service itself is temporarily unable to serve
    /// (shutting down, a queue is full, a database is unreachable).
    #[error("Service unavailable: {0}")]
    Unavailable(String),

    /// Writing or reading the audit trail failed.
    #[error("Audit error: {0}")]
    Audit(String),

    /// Configuration is invalid; the message names the field.
    #[error("Configuration error: {0}")]
    Config(String),

    /// Any other internal failure.
    #[error("Internal error: {0}")]
    Internal(String),
}

fn timeout_message(duration: Duration) -> String {
    if duration.is_zero() {
        "Timed out".to_owned()
    } else {
        format!("Timeout after {duration:?}")
    }
}

impl AgentError {
    /// The HTTP status a server should answer with for this error.
    ///
    /// | variant | status |
    /// |---|---|
    /// | `RateLimited` | 429 Too Many Requests |
    /// | `CircuitBreakerOpen`, `BulkheadFull`, `LlmUnavailable`, `Unavailable` | 503 Service Unavailable |
    /// | `Timeout` | 504 Gateway Timeout |
    /// | `InvalidInput`, `SecurityViolation` | 400 Bad Request |
    /// | `Unauthorized` | 401 Unauthorized |
    /// | `Forbidden` | 403 Forbidden |
    /// | `NotFound` | 404 Not Found |
    /// | `Llm`, `Tool`, `Audit`, `Config`, `Internal` | 500 Internal Server Error |
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::CircuitBreakerOpen
            | Self::BulkheadFull
            | Self::LlmUnavailable(_)
            | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::InvalidInput(_) | Self::SecurityViolation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Llm(_)
            | Self::Tool { .. }
            | Self::Audit(_)
            | Self::Config(_)
            | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the same call may succeed if tried again later (or against a
    /// fallback): rate limits, open breakers, full bulkheads, timeouts and
    /// unavailable dependencies. Retry policies and fallbacks key off this.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::CircuitBreakerOpen
                | Self::BulkheadFull
                | Self::Timeout { .. }
                | Self::LlmUnavailable(_)
                | Self::Unavailable(_)
        )
    }

    /// A stable, machine-readable code for this error (`"rate_limited"`,
    /// `"circuit_breaker_open"`, …), suitable for JSON error bodies and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Llm(_) => "llm_error",
            Self::LlmUnavailable(_) => "llm_unavailable",
            Self::Tool { .. } => "tool_error",
            Self::RateLimited => "rate_limited",
            Self::CircuitBreakerOpen => "circuit_breaker_open",
            Self::BulkheadFull => "bulkhead_full",
            Self::Timeout { .. } => "timeout",
            Self::InvalidInput(_) => "invalid_input",
            Self::SecurityViolation(_) => "security_violation",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "unavailable",
            Self::Audit(_) => "audit_error",
            Self::Config(_) => "config_error",
            Self::Internal(_) => "internal_error",
        }
    }

    /// Shorthand for [`AgentError::Tool`].
    pub fn tool(tool: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Tool {
            tool: tool.into(),
            error: error.to_string(),
        }
    }
}

/// Lets `tokio::time::timeout(d, fut).await?` yield an [`AgentError::Timeout`].
///
/// `Elapsed` does not say which limit expired, so the duration is zero; wrap the
/// call with a helper that knows the limit (for example the resilience crate's
/// `Timeout`) when the error should carry it.
impl From<tokio::time::error::Elapsed> for AgentError {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Self::Timeout {
            duration: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_follow_the_guide() {
        assert_eq!(
            AgentError::RateLimited.status_code(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            AgentError::CircuitBreakerOpen.status_code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            AgentError::Timeout {
                duration: Duration::from_secs(30)
            }
            .status_code(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            AgentError::Llm("x".into()).status_code(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            AgentError::tool("calc", "division by zero").status_code(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            AgentError::InvalidInput("x".into()).status_code(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            AgentError::Unauthorized("x".into()).status_code(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            AgentError::Forbidden("x".into()).status_code(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            AgentError::BulkheadFull.status_code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn only_transient_failures_are_temporary() {
        assert!(AgentError::RateLimited.is_temporary());
        assert!(AgentError::CircuitBreakerOpen.is_temporary());
        assert!(AgentError::BulkheadFull.is_temporary());
        assert!(AgentError::LlmUnavailable("overloaded".into()).is_temporary());
        assert!(
            AgentError::Timeout {
                duration: Duration::ZERO
            }
            .is_temporary()
        );
        assert!(!AgentError::Llm("bad request".into()).is_temporary());
        assert!(!AgentError::InvalidInput("empty".into()).is_temporary());
        assert!(!AgentError::Unauthorized("no key".into()).is_temporary());
    }

    #[test]
    fn messages_match_the_guide() {
        assert_eq!(
            AgentError::Llm("boom".into()).to_string(),
            "LLM error: boom"
        );
        assert_eq!(
            AgentError::tool("search", "no index").to_string(),
            "Tool execution error: search: no index"
        );
        assert_eq!(
            AgentError::Timeout {
                duration: Duration::from_secs(2)
            }
            .to_string(),
            "Timeout after 2s"
        );
        assert_eq!(
            AgentError::Timeout {
                duration: Duration::ZERO
            }
            .to_string(),
            "Timed out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn elapsed_converts_with_question_mark() {
        async fn slow() -> Result<u8> {
            tokio::time::timeout(Duration::from_millis(10), std::future::pending::<()>()).await?;
            Ok(1)
        }
        assert!(matches!(slow().await, Err(AgentError::Timeout { .. })));
    }

    #[test]
    fn codes_are_distinct() {
        let all = [
            AgentError::Llm(String::new()),
            AgentError::LlmUnavailable(String::new()),
            AgentError::tool("", ""),
            AgentError::RateLimited,
            AgentError::CircuitBreakerOpen,
            AgentError::BulkheadFull,
            AgentError::Timeout {
                duration: Duration::ZERO,
            },
            AgentError::InvalidInput(String::new()),
            AgentError::SecurityViolation(String::new()),
            AgentError::Unauthorized(String::new()),
            AgentError::Forbidden(String::new()),
            AgentError::NotFound(String::new()),
            AgentError::Unavailable(String::new()),
            AgentError::Audit(String::new()),
            AgentError::Config(String::new()),
            AgentError::Internal(String::new()),
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(AgentError::code).collect();
        assert_eq!(codes.len(), all.len());
    }
}
