//! The guide's resilient call, assembled once instead of written by hand.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agent_patterns_core::AgentError;

use crate::bulkhead::Bulkhead;
use crate::circuit_breaker::CircuitBreaker;
use crate::config_error::ConfigError;
use crate::rate_limiter::RateLimiter;
use crate::retry::{Retry, RetryBudget, RetryDecision, RetryPolicy, retry_temporary};

/// Rate limiter → circuit breaker → bulkhead → timeout around every attempt,
/// with retries (optionally budgeted) around the whole.
///
/// Each attempt asks the rate limiter and the circuit breaker again, so a
/// retry storm is throttled and stops as soon as the breaker opens. Refusals
/// by the pipeline's own primitives (rate limited, breaker open, bulkhead
/// full) are returned at once, never retried; failures of the call itself are
/// retried when [`retry_temporary`] says so. Errors that are the caller's fault
/// (invalid input, unauthorized, forbidden, not found, blocked) do not count
/// against the circuit breaker.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use agent_patterns_core::AgentError;
/// use agent_patterns_resilience::*;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), AgentError> {
/// let pipeline = Pipeline::builder("llm")
///     .rate_limiter(Arc::new(RateLimiter::new("llm", RateLimiterConfig::default())))
///     .circuit_breaker(Arc::new(CircuitBreaker::new("llm", CircuitBreakerConfig::default())))
///     .timeout(Duration::from_secs(30))
///     .retry(RetryPolicy::default())
///     .build()?;
/// let reply = pipeline.execute(|| async { Ok::<_, AgentError>("hello") }).await?;
/// assert_eq!(reply, "hello");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Pipeline {
    rate_limiter: Option<Arc<RateLimiter>>,
    circuit_breaker: Option<Arc<CircuitBreaker>>,
    bulkhead: Option<Arc<Bulkhead>>,
    timeout: Option<Duration>,
    retry: Option<Retry>,
}

/// Builds a [`Pipeline`]; every stage is optional.
#[derive(Debug)]
#[must_use]
pub struct PipelineBuilder {
    name: String,
    rate_limiter: Option<Arc<RateLimiter>>,
    circuit_breaker: Option<Arc<CircuitBreaker>>,
    bulkhead: Option<Arc<Bulkhead>>,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    budget: Option<Arc<RetryBudget>>,
}

impl PipelineBuilder {
    /// Take a token from `limiter` before each attempt.
    pub fn rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }

    /// Ask `breaker` before each attempt and record its outcome.
    pub fn circuit_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }

    /// Run each attempt inside `bulkhead`.
    pub fn bulkhead(mut self, bulkhead: Arc<Bulkhead>) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Fail an attempt that takes longer than `limit`.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Retry failed attempts per `policy`.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Draw retries from a budget shared with other callers.
    pub fn retry_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<Pipeline, ConfigError> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "pipeline",
                "timeout",
                "must be above zero",
            ));
        }
        let retry = match self.retry {
            Some(policy) => {
                let policy = RetryPolicy {
                    attempt_timeout: None,
                    ..policy
                };
                let retry = Retry::new(self.name, policy)?;
                Some(match self.budget {
                    Some(budget) => retry.with_budget(budget),
                    None => retry,
                })
            }
            None => None,
        };
        Ok(Pipeline {
            rate_limiter: self.rate_limiter,
            circuit_breaker: self.circuit_breaker,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            retry,
        })
    }
}

/// An attempt's error: refused by the pipeline, or failed in the call.
#[derive(Debug)]
enum Attempt {
    Refused(AgentError),
    Failed(AgentError),
}

impl From<AgentError> for Attempt {
    fn from(e: AgentError) -> Self {
        Self::Failed(e)
    }
}

/// Whether an error says the dependency misbehaved (rather than the caller).
fn is_dependency_failure(error: &AgentError) -> bool {
    !matches!(
        error,
        AgentError::InvalidInput(_)
            | AgentError::Unauthorized(_)
            | AgentError::Forbidden(_)
            | AgentError::NotFound(_)
            | AgentError::SecurityViolation(_)
    )
}

impl Pipeline {
    /// A builder; `name` labels the retry metrics.
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            name: name.into(),
            rate_limiter: None,
            circuit_breaker: None,
            bulkhead: None,
            timeout: None,
            retry: None,
            budget: None,
        }
    }

    /// Run `operation` through every stage. It is called once per attempt.
    pub async fn execute<T, F, Fut>(&self, mut operation: F) -> Result<T, AgentError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AgentError>>,
    {
        let result = match &self.retry {
            None => self.attempt(operation()).await,
            Some(retry) => retry
                .run_if(
                    |_| self.attempt(operation()),
                    |e: &Attempt| match e {
                        Attempt::Refused(_) => RetryDecision::Stop,
                        Attempt::Failed(inner) => retry_temporary(inner),
                    },
                )
                .await
                .map_err(|e| e.error),
        };
        result.map_err(|e| match e {
            Attempt::Refused(e) | Attempt::Failed(e) => e,
        })
    }

    async fn attempt<T, Fut>(&self, call: Fut) -> Result<T, Attempt>
    where
        Fut: Future<Output = Result<T, AgentError>>,
    {
        if let Some(limiter) = &self.rate_limiter {
            limiter.check(1).map_err(|e| Attempt::Refused(e.into()))?;
        }
        let permit = match &self.circuit_breaker {
            Some(breaker) => Some(
                breaker
                    .acquire_permission()
                    .map_err(|e| Attempt::Refused(e.into()))?,
            ),
            None => None,
        };
        let _slot = match &self.bulkhead {
            Some(bulkhead) => Some(
                bulkhead
                    .acquire()
                    .await
                    .map_err(|e| Attempt::Refused(e.into()))?,
            ),
            None => None,
        };
        let result = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(r) => r,
                Err(_) => Err(AgentError::Timeout { duration: limit }),
            },
            None => call.await,
        };
        if let Some(permit) = permit {
            permit.record(match &result {
                Ok(_) => true,
                Err(e) => !is_dependency_failure(e),
            });
        }
        result.map_err(Attempt::Failed)
    }
}
