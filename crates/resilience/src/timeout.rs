//! Time limits that fail with `AgentError::Timeout { duration }`.

use std::future::Future;
use std::time::Duration;

use agent_patterns_core::AgentError;

/// The operation did not finish within `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {duration:?}")]
pub struct TimeoutError {
    /// The limit that expired.
    pub duration: Duration,
}

impl From<TimeoutError> for AgentError {
    fn from(e: TimeoutError) -> Self {
        AgentError::Timeout {
            duration: e.duration,
        }
    }
}

/// Run `future` for at most `limit`; unlike a bare `tokio::time::timeout`, the
/// error carries the limit, and converts into `AgentError::Timeout { duration }`.
///
/// ```
/// use std::time::Duration;
/// use agent_patterns_core::AgentError;
/// use agent_patterns_resilience::with_timeout;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let slow = with_timeout(Duration::from_secs(2), std::future::pending::<()>()).await;
/// let err: AgentError = slow.unwrap_err().into();
/// assert_eq!(err, AgentError::Timeout { duration: Duration::from_secs(2) });
/// # }
/// ```
pub async fn with_timeout<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, TimeoutError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| TimeoutError { duration: limit })
}

/// Run `primary`; if it fails with an error that
/// [`is_temporary`](AgentError::is_temporary), run `fallback` with that error
/// instead (the guide's graceful degradation). Permanent errors are returned
/// as they are.
pub async fn with_fallback<T, P, F, FFut>(primary: P, fallback: F) -> Result<T, AgentError>
where
    P: Future<Output = Result<T, AgentError>>,
    F: FnOnce(AgentError) -> FFut,
    FFut: Future<Output = Result<T, AgentError>>,
{
    match primary.await {
        Ok(value) => Ok(value),
        Err(e) if e.is_temporary() => {
            tracing::warn!(error = %e, "primary failed; using fallback");
            fallback(e).await
        }
        Err(e) => Err(e),
    }
}
