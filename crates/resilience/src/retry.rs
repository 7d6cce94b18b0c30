//! Retry with exponential backoff, jitter, a deadline and a shared budget.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_patterns_core::AgentError;
use metrics::Counter;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SharedClock, default_clock, duration_nanos};
use crate::config_error::ConfigError;
use crate::metrics::{RETRY_ATTEMPTS_TOTAL, RETRY_BUDGET_EXHAUSTED_TOTAL};

/// How the delay between attempts is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the exponential delay.
    None,
    /// Uniform in `[0, delay]` ("full jitter"): spreads retries of many clients.
    Full,
    /// `min(max_delay, uniform(initial, previous · 3))` ("decorrelated jitter").
    Decorrelated,
}

/// When and how often to try again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Growth of the delay per retry (≥ 1.0).
    pub multiplier: f64,
    /// Randomisation of delays.
    pub jitter: Jitter,
    /// Give up once this much time has passed since the first attempt
    /// (a retry that could not start before it is not made).
    pub deadline: Option<Duration>,
    /// Time limit of each attempt; an attempt over it fails with
    /// `AgentError::Timeout` (which is retried).
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 3 attempts, 100 ms doubling up to 10 s, full jitter, no deadline.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Full,
            deadline: None,
            attempt_timeout: None,
        }
    }
}

const COMPONENT: &str = "retry";

impl RetryPolicy {
    /// Check the values; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "max_attempts",
                "must be at least 1",
            ));
        }
        if self.multiplier.is_nan() || self.multiplier < 1.0 || self.multiplier.is_infinite() {
            return Err(ConfigError::new(
                COMPONENT,
                "multiplier",
                format!(
                    "must be a finite number of at least 1.0 (got {})",
                    self.multiplier
                ),
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(ConfigError::new(
                COMPONENT,
                "max_delay",
                "must not be below initial_delay",
            ));
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                COMPONENT,
                "attempt_timeout",
                "must be above zero",
            ));
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1-based) without jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(retry.saturating_sub(1).min(1000) as i32);
        let nanos = self.initial_delay.as_nanos() as f64 * factor;
        let max = self.max_delay.as_nanos() as f64;
        Duration::from_nanos(nanos.min(max) as u64)
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after the policy's backoff.
    Retry,
    /// Try again, but not before this delay (a server's `Retry-After`).
    RetryAfter(Duration),
    /// Give up and return this error.
    Stop,
}

/// The default decision for agent errors: retry what [`AgentError::is_temporary`]
/// says is temporary, except refusals that retrying cannot fix quickly
/// (an open circuit breaker).
pub fn retry_temporary(error: &AgentError) -> RetryDecision {
    match error {
        AgentError::CircuitBreakerOpen => RetryDecision::Stop,
        e if e.is_temporary() => RetryDecision::Retry,
        _ => RetryDecision::Stop,
    }
}

/// Limits retries to a share of recent requests, so that retries cannot
/// multiply load on a dependency that is already failing.
///
/// Over the last `window`, retries may make up at most `ratio` × requests,
/// plus `min_per_second` × window seconds so that low traffic can still retry.
/// Share one budget (in an `Arc`) across every caller of a dependency.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    reserve: u64,
    window_ns: u64,
    clock: SharedClock,
    buckets: Mutex<VecDeque<BudgetBucket>>,
    exhausted: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct BudgetBucket {
    second: u64,
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request (e.g. 0.2) plus
    /// `min_per_second` over a sliding `window` (1 s to 1 h).
    pub fn new(ratio: f64, min_per_second: u32, window: Duration) -> Result<Self, ConfigError> {
        Self::with_clock(ratio, min_per_second, window, default_clock())
    }

    /// [`RetryBudget::new`] reading time from `clock`.
    pub fn with_clock(
        ratio: f64,
        min_per_second: u32,
        window: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(ConfigError::new(
                "retry budget",
                "ratio",
                format!("must be between 0 and 1000 (got {ratio})"),
            ));
        }
        if window < Duration::from_secs(1) || window > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "retry budget",
                "window",
                "must be between 1 s and 1 h",
            ));
        }
        Ok(Self {
            ratio,
            reserve: u64::from(min_per_second) * window.as_secs(),
            window_ns: duration_nanos(window),
            clock,
            buckets: Mutex::new(VecDeque::new()),
            exhausted: AtomicU64::new(0),
        })
    }

    fn with_buckets<R>(&self, f: impl FnOnce(&mut VecDeque<BudgetBucket>, u64) -> R) -> R {
        let now = self.clock.now_nanos();
        let second = now / 1_000_000_000;
        let horizon = now.saturating_sub(self.window_ns) / 1_000_000_000;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        while buckets
            .front()
            .is_some_and(|b| b.second <= horizon && b.second != second)
        {
            buckets.pop_front();
        }
        if buckets.back().is_none_or(|b| b.second != second) {
            buckets.push_back(BudgetBucket {
                second,
                requests: 0,
                retries: 0,
            });
        }
        f(&mut buckets, second)
    }

    /// Count one request (a first attempt).
    pub fn deposit(&self) {
        self.with_buckets(|b, _| {
            if let Some(last) = b.back_mut() {
                last.requests += 1;
            }
        });
    }

    /// Take one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        let granted = self.with_buckets(|b, _| {
            let (requests, retries) = b
                .iter()
                .fold((0u64, 0u64), |(q, r), x| (q + x.requests, r + x.retries));
            let allowed = self.reserve as f64 + self.ratio * requests as f64;
            if (retries as f64) < allowed {
                if let Some(last) = b.back_mut() {
                    last.retries += 1;
                }
                true
            } else {
                false
            }
        });
        if !granted {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        granted
    }

    /// Retries refused so far because the budget was spent.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

/// The last error, and how many attempts were made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error} (after {attempts} attempt(s))")]
pub struct RetryError<E> {
    /// The last attempt's error.
    pub error: E,
    /// Attempts made.
    pub attempts: u32,
}

impl<E> RetryError<E> {
    /// The last attempt's error.
    pub fn into_inner(self) -> E {
        self.error
    }
}

impl From<RetryError<AgentError>> for AgentError {
    fn from(e: RetryError<AgentError>) -> Self {
        e.error
    }
}

/// Runs an operation again after failures, per a [`RetryPolicy`].
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use agent_patterns_core::AgentError;
/// use agent_patterns_resilience::*;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let retry = Retry::new("llm", RetryPolicy::default()).unwrap();
/// let calls = AtomicU32::new(0);
/// let answer = retry
///     .run(|_attempt| async {
///         if calls.fetch_add(1, Ordering::SeqCst) < 2 {
///             Err(AgentError::LlmUnavailable("overloaded".into()))
///         } else {
///             Ok("done")
///         }
///     })
///     .await;
/// assert_eq!(answer.unwrap(), "done");
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// # }
/// ```
#[derive(Debug)]
pub struct Retry {
    policy: RetryPolicy,
    budget: Option<Arc<RetryBudget>>,
    clock: SharedClock,
    seed: AtomicU64,
    attempts_metric: Counter,
    exhausted_metric: Counter,
}

impl Retry {
    /// A retrier named `name` (the `name` label of its metrics).
    pub fn new(name: impl Into<String>, policy: RetryPolicy) -> Result<Self, ConfigError> {
        policy.validate()?;
        let name = name.into();
        let attempts_metric = metrics::counter!(RETRY_ATTEMPTS_TOTAL, "name" => name.clone());
        let exhausted_metric = metrics::counter!(RETRY_BUDGET_EXHAUSTED_TOTAL, "name" => name);
        attempts_metric.increment(0);
        exhausted_metric.increment(0);
        Ok(Self {
            policy,
            budget: None,
            clock: default_clock(),
            seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            attempts_metric,
            exhausted_metric,
        })
    }

    /// Draw retries from a shared budget.
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Read time (for the deadline) from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Run `operation` (given the 1-based attempt number), retrying errors
    /// that [`retry_temporary`] says are worth retrying.
    pub async fn run<T, F, Fut>(&self, operation: F) -> Result<T, RetryError<AgentError>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, AgentError>>,
    {
        self.run_if(operation, retry_temporary).await
    }

    /// Run `operation`, with `decide` choosing after each error whether and
    /// when to retry.
    pub async fn run_if<T, E, F, Fut, D>(
        &self,
        mut operation: F,
        decide: D,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        D: Fn(&E) -> RetryDecision,
        E: From<AgentError>,
    {
        let started = self.clock.now_nanos();
        let deadline = self
            .policy
            .deadline
            .map(|d| started.saturating_add(duration_nanos(d)));
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let mut previous_delay = self.policy.initial_delay;
        let mut attempt = 1;
        loop {
            let result = match self.policy.attempt_timeout {
                Some(limit) => match tokio::time::timeout(limit, operation(attempt)).await {
                    Ok(r) => r,
                    Err(_) => Err(E::from(AgentError::Timeout { duration: limit })),
                },
                None => operation(attempt).await,
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let give_up = |error| {
                Err(RetryError {
                    error,
                    attempts: attempt,
                })
            };
            if attempt >= self.policy.max_attempts {
                return give_up(error);
            }
            let delay = match decide(&error) {
                RetryDecision::Stop => return give_up(error),
                RetryDecision::Retry => self.backoff(attempt, &mut previous_delay),
                RetryDecision::RetryAfter(d) => d.max(self.backoff(attempt, &mut previous_delay)),
            };
            if let Some(deadline) = deadline
                && self.clock.now_nanos().saturating_add(duration_nanos(delay)) >= deadline
            {
                return give_up(error);
            }
            if let Some(budget) = &self.budget
                && !budget.withdraw()
            {
                self.exhausted_metric.increment(1);
                return give_up(error);
            }
            self.attempts_metric.increment(1);
            tracing::debug!(attempt, ?delay, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The delay before retry `retry` (1-based), jittered.
    fn backoff(&self, retry: u32, previous: &mut Duration) -> Duration {
        let base = self.policy.base_delay(retry);
        let delay = match self.policy.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(self.random()),
            Jitter::Decorrelated => {
                let low = self.policy.initial_delay.as_secs_f64();
                let high = (previous.as_secs_f64() * 3.0).max(low);
                let pick = low + (high - low) * self.random();
                Duration::from_secs_f64(pick.min(self.policy.max_delay.as_secs_f64()))
            }
        };
        *previous = delay;
        delay
    }

    /// A uniform number in `[0, 1)` (splitmix64; jitter needs spread, not secrecy).
    fn random(&self) -> f64 {
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
