//! Token-bucket rate limiting (GCRA), lock-free.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_patterns_core::AgentError;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SharedClock, default_clock, duration_nanos};
use crate::config_error::ConfigError;
use crate::gcra::{Decision, MAX_SETTLE_INTERVAL, Params, ParamsCell, State, TAU_MAX};
use crate::metrics::LimiterMetrics;

/// Size and speed of a token bucket.
///
/// `capacity` is the burst: how many tokens a full bucket holds. `refill_rate`
/// is tokens added per second. A full bucket admits `capacity` requests at
/// once, then `refill_rate` per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Bucket capacity (burst size), at least 1.
    pub capacity: u64,
    /// Tokens added per second; finite, above 0 and at most 1e9.
    pub refill_rate: f64,
}

impl Default for RateLimiterConfig {
    /// 100 tokens, 10 per second.
    fn default() -> Self {
        Self {
            capacity: 100,
            refill_rate: 10.0,
        }
    }
}

const COMPONENT: &str = "rate limiter";

impl RateLimiterConfig {
    /// Check the values; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.params(0).map(|_| ())
    }

    pub(crate) fn params(&self, settle_interval: u64) -> Result<Params, ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "capacity",
                "must be at least 1",
            ));
        }
        let t = emission_interval(self.refill_rate)?;
        let tau = self
            .capacity
            .checked_mul(t)
            .filter(|tau| *tau <= TAU_MAX)
            .ok_or_else(|| {
                ConfigError::new(
                    COMPONENT,
                    "capacity",
                    format!(
                        "{} at {} tokens/s takes longer than {} days to refill",
                        self.capacity,
                        self.refill_rate,
                        TAU_MAX / 86_400_000_000_000
                    ),
                )
            })?;
        Ok(Params {
            t,
            tau,
            k: settle_interval.min(MAX_SETTLE_INTERVAL),
        })
    }
}

fn emission_interval(rate: f64) -> Result<u64, ConfigError> {
    if !rate.is_finite() || rate <= 0.0 {
        return Err(ConfigError::new(
            COMPONENT,
            "refill_rate",
            format!("must be a finite number above 0 (got {rate})"),
        ));
    }
    if rate > 1e9 {
        return Err(ConfigError::new(
            COMPONENT,
            "refill_rate",
            format!("must be at most 1e9 tokens per second (got {rate})"),
        ));
    }
    Ok(((1e9 / rate).round() as u64).max(1))
}

/// The default settle interval for a capacity: exact below 1024 tokens,
/// otherwise one clock read per `capacity / 1024` admissions (at most 62), so
/// the accounting can lag by less than 0.1 % of the bucket.
pub(crate) fn default_settle_interval(capacity: u64) -> u64 {
    (capacity / 1024).min(MAX_SETTLE_INTERVAL)
}

/// The request was refused: not enough tokens.
///
/// This is the only way [`RateLimiter::try_acquire`] fails; use
/// [`RateLimiter::time_until_available`] for how long to wait, or
/// [`RateLimiter::acquire`] to wait for a booked slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RateLimiterError {
    /// Not enough tokens right now (or more tokens asked for than the capacity).
    #[error("rate limit exceeded")]
    RateLimitExceeded,
}

impl From<RateLimiterError> for AgentError {
    fn from(_: RateLimiterError) -> Self {
        AgentError::RateLimited
    }
}

/// Why [`RateLimiter::acquire`] did not get its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// The tokens would only be available after `wait`, longer than allowed.
    #[error("rate limit exceeded: tokens available in {wait:?}, more than the allowed wait")]
    WouldWaitTooLong {
        /// How long the caller would have had to wait.
        wait: Duration,
    },
    /// More tokens than the bucket holds were asked for.
    #[error("requested {requested} tokens but the bucket holds at most {capacity}")]
    ExceedsCapacity {
        /// Tokens asked for.
        requested: u64,
        /// The bucket's capacity.
        capacity: u64,
    },
}

impl AcquireError {
    /// How long to wait before asking again, for a `Retry-After` header.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::WouldWaitTooLong { wait } => Some(*wait),
            Self::ExceedsCapacity { .. } => None,
        }
    }
}

impl From<AcquireError> for AgentError {
    fn from(_: AcquireError) -> Self {
        AgentError::RateLimited
    }
}

/// Figures for dashboards and debug endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimiterSnapshot {
    /// The limiter's name.
    pub name: String,
    /// Bucket capacity.
    pub capacity: u64,
    /// Tokens per second.
    pub refill_rate: f64,
    /// Whole tokens available now.
    pub available_tokens: u64,
}

/// A token-bucket rate limiter.
///
/// State is one atomic word updated by compare-and-swap (the GCRA algorithm):
/// deciding takes no lock and allocates nothing. Time follows tokio's clock.
///
/// ```
/// use agent_patterns_resilience::*;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = RateLimiter::new("api".to_string(), RateLimiterConfig {
///     capacity: 2,
///     refill_rate: 1.0,
/// });
/// assert!(limiter.try_acquire(1).await.is_ok());
/// assert!(limiter.try_acquire(1).await.is_ok());
/// assert_eq!(limiter.try_acquire(1).await, Err(RateLimiterError::RateLimitExceeded));
/// assert_eq!(limiter.time_until_available(1), Some(std::time::Duration::from_secs(1)));
///
/// tokio::time::advance(std::time::Duration::from_secs(1)).await;
/// assert!(limiter.try_acquire(1).await.is_ok());
/// # }
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    name: Arc<str>,
    state: State,
    params: ParamsCell,
    shape: Mutex<Shape>,
    clock: SharedClock,
    metrics: LimiterMetrics,
}

/// The writer-side copy of the settings (changed under the mutex).
#[derive(Debug, Clone, Copy)]
struct Shape {
    capacity: u64,
    refill_rate: f64,
    params: Params,
    auto_settle: bool,
}

/// Builds a [`RateLimiter`] with settings beyond [`RateLimiterConfig`].
#[derive(Debug)]
#[must_use]
pub struct RateLimiterBuilder {
    name: String,
    config: RateLimiterConfig,
    clock: Option<SharedClock>,
    settle_interval: Option<u64>,
}

impl RateLimiterBuilder {
    /// Read time from `clock` instead of tokio's clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Admit up to `tokens` between two clock reads (0 = read the clock on
    /// every decision: exact accounting). The limiter never admits more than
    /// exact accounting would; after an idle gap it may admit up to this many
    /// fewer. Default: `capacity / 1024`, at most 62. Values above 62 are
    /// capped.
    pub fn settle_interval(mut self, tokens: u64) -> Self {
        self.settle_interval = Some(tokens);
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        let auto = self.settle_interval.is_none();
        let k = self
            .settle_interval
            .unwrap_or_else(|| default_settle_interval(self.config.capacity));
        let params = self.config.params(k)?;
        Ok(RateLimiter::assemble(
            self.name,
            self.config,
            params,
            self.clock.unwrap_or_else(default_clock),
            auto,
        ))
    }
}

/// Tokens taken by [`RateLimiter::reserve`], settled with the real usage.
///
/// Dropping it without [`settle`](Self::settle) keeps the reserved tokens spent.
#[derive(Debug)]
#[must_use = "settle the reservation with the real usage"]
pub struct Reservation<'a> {
    limiter: &'a RateLimiter,
    reserved: u64,
}

impl Reservation<'_> {
    /// Tokens reserved.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Settle with the real usage: unused tokens go back to the bucket, extra
    /// usage is charged (the bucket may go into debt, delaying later requests).
    pub fn settle(self, used: u64) {
        let limiter = self.limiter;
        if used < self.reserved {
            limiter
                .state
                .refund(&limiter.params, &*limiter.clock, self.reserved - used);
        } else if used > self.reserved {
            limiter
                .state
                .charge(&limiter.params, &*limiter.clock, used - self.reserved);
        }
    }
}

/// Gives booked tokens back when an `acquire` future is dropped while waiting.
struct RefundOnDrop<'a> {
    limiter: &'a RateLimiter,
    tokens: u64,
}

impl Drop for RefundOnDrop<'_> {
    fn drop(&mut self) {
        let limiter = self.limiter;
        limiter
            .state
            .refund(&limiter.params, &*limiter.clock, self.tokens);
    }
}

/// Parameters of a limiter that refuses everything (invalid configuration).
fn closed_params() -> Params {
    Params { t: 1, tau: 0, k: 0 }
}

impl RateLimiter {
    /// A limiter named `name` (the `name` label of its metrics).
    ///
    /// An invalid configuration (capacity 0, a rate that is not a positive
    /// finite number) does not panic: the limiter is created closed — it refuses
    /// every request — and the problem is logged. Use [`RateLimiter::try_new`]
    /// to get the error instead.
    pub fn new(name: impl Into<String>, config: RateLimiterConfig) -> Self {
        let name = name.into();
        match Self::try_new(name.clone(), config) {
            Ok(limiter) => limiter,
            Err(e) => {
                tracing::error!(limiter = %name, error = %e, "rate limiter refuses every request");
                Self::assemble(name, config, closed_params(), default_clock(), false)
            }
        }
    }

    /// A limiter, or the reason the configuration is invalid.
    pub fn try_new(
        name: impl Into<String>,
        config: RateLimiterConfig,
    ) -> Result<Self, ConfigError> {
        Self::builder(name, config).build()
    }

    /// A builder for the settings beyond [`RateLimiterConfig`].
    pub fn builder(name: impl Into<String>, config: RateLimiterConfig) -> RateLimiterBuilder {
        RateLimiterBuilder {
            name: name.into(),
            config,
            clock: None,
            settle_interval: None,
        }
    }

    fn assemble(
        name: String,
        config: RateLimiterConfig,
        params: Params,
        clock: SharedClock,
        auto_settle: bool,
    ) -> Self {
        let metrics = LimiterMetrics::new(&name);
        Self {
            name: name.into(),
            state: State::default(),
            params: ParamsCell::new(params),
            shape: Mutex::new(Shape {
                capacity: config.capacity,
                refill_rate: config.refill_rate,
                params,
                auto_settle,
            }),
            clock,
            metrics,
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Take `n` tokens if they are available now. Never waits.
    pub async fn try_acquire(&self, n: u64) -> Result<(), RateLimiterError> {
        self.check(n)
    }

    /// [`try_acquire`](Self::try_acquire) without `async`, for synchronous code.
    #[inline]
    pub fn check(&self, n: u64) -> Result<(), RateLimiterError> {
        self.check_with_retry_after(n)
            .map_err(|_| RateLimiterError::RateLimitExceeded)
    }

    /// Like [`check`](Self::check), but a refusal says how long until the
    /// tokens are available (`None`: never, `n` exceeds the capacity).
    #[inline]
    pub fn check_with_retry_after(&self, n: u64) -> Result<(), Option<Duration>> {
        if n == 0 {
            return Ok(());
        }
        self.metrics
            .account(self.state.decide(&self.params, &*self.clock, n))
    }

    /// Take `n` tokens, waiting for them if they will be available within
    /// `max_wait`. The slot is booked at once (so waiters are served in the
    /// order they asked, each sleeping exactly until its own slot — no polling);
    /// a request that would wait longer fails immediately without taking
    /// anything. Dropping the future while it waits gives the tokens back.
    pub async fn acquire(&self, n: u64, max_wait: Duration) -> Result<(), AcquireError> {
        if n == 0 {
            return Ok(());
        }
        self.metrics.requests.increment(1);
        match self
            .state
            .book(&self.params, &*self.clock, n, duration_nanos(max_wait))
        {
            Ok(0) => Ok(()),
            Ok(wait) => {
                let guard = RefundOnDrop {
                    limiter: self,
                    tokens: n,
                };
                tokio::time::sleep(Duration::from_nanos(wait)).await;
                std::mem::forget(guard);
                Ok(())
            }
            Err(decision) => {
                self.metrics.rejected.increment(1);
                Err(match decision {
                    Decision::Denied { wait_ns } => AcquireError::WouldWaitTooLong {
                        wait: Duration::from_nanos(wait_ns),
                    },
                    _ => AcquireError::ExceedsCapacity {
                        requested: n,
                        capacity: self.params.load().capacity(),
                    },
                })
            }
        }
    }

    /// Take `estimate` tokens now and settle the real amount later: LLM token
    /// budgets reserve the expected usage before a call and settle the actual
    /// usage after it. Fails like [`try_acquire`](Self::try_acquire).
    pub fn reserve(&self, estimate: u64) -> Result<Reservation<'_>, RateLimiterError> {
        self.check(estimate)?;
        Ok(Reservation {
            limiter: self,
            reserved: estimate,
        })
    }

    /// How long until `n` tokens are available (zero if they are now);
    /// `None` if `n` exceeds the capacity. Use it for `Retry-After`.
    pub fn time_until_available(&self, n: u64) -> Option<Duration> {
        if n > self.params.load().capacity() {
            return None;
        }
        let (_, wait) = self.state.peek(&self.params, &*self.clock, n);
        Some(Duration::from_nanos(wait))
    }

    /// Whole tokens available now.
    pub fn available_tokens(&self) -> u64 {
        self.state.peek(&self.params, &*self.clock, 1).0
    }

    /// The bucket's capacity.
    pub fn capacity(&self) -> u64 {
        self.shape().capacity
    }

    /// Tokens added per second.
    pub fn refill_rate(&self) -> f64 {
        self.shape().refill_rate
    }

    /// Current figures.
    pub fn snapshot(&self) -> RateLimiterSnapshot {
        let shape = self.shape();
        RateLimiterSnapshot {
            name: self.name.to_string(),
            capacity: shape.capacity,
            refill_rate: shape.refill_rate,
            available_tokens: self.available_tokens(),
        }
    }

    /// Change the refill rate at run time. Tokens already owed stay owed (at
    /// the new rate they take correspondingly longer or shorter to repay).
    /// An invalid rate is ignored and logged; see [`try_set_rate`](Self::try_set_rate).
    pub fn set_rate(&self, refill_rate: f64) {
        if let Err(e) = self.try_set_rate(refill_rate) {
            tracing::error!(limiter = %self.name, error = %e, "rate not changed");
        }
    }

    /// Change the refill rate, or say why the value is invalid.
    pub fn try_set_rate(&self, refill_rate: f64) -> Result<(), ConfigError> {
        let mut shape = self.lock_shape();
        let config = RateLimiterConfig {
            capacity: shape.capacity,
            refill_rate,
        };
        self.reshape(&mut shape, config)
    }

    /// Change the capacity at run time; tokens owed stay owed. A capacity of 0
    /// is ignored and logged; see [`try_set_capacity`](Self::try_set_capacity).
    pub fn set_capacity(&self, capacity: u64) {
        if let Err(e) = self.try_set_capacity(capacity) {
            tracing::error!(limiter = %self.name, error = %e, "capacity not changed");
        }
    }

    /// Change the capacity, or say why the value is invalid.
    pub fn try_set_capacity(&self, capacity: u64) -> Result<(), ConfigError> {
        let mut shape = self.lock_shape();
        let config = RateLimiterConfig {
            capacity,
            refill_rate: shape.refill_rate,
        };
        self.reshape(&mut shape, config)
    }

    fn reshape(&self, shape: &mut Shape, config: RateLimiterConfig) -> Result<(), ConfigError> {
        let k = if shape.auto_settle {
            default_settle_interval(config.capacity)
        } else {
            shape.params.k
        };
        let new = config.params(k)?;
        let old = shape.params;
        self.state
            .convert(old, new, &*self.clock, || self.params.store(new));
        *shape = Shape {
            capacity: config.capacity,
            refill_rate: config.refill_rate,
            params: new,
            auto_settle: shape.auto_settle,
        };
        Ok(())
    }

    fn lock_shape(&self) -> std::sync::MutexGuard<'_, Shape> {
        self.shape.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shape(&self) -> Shape {
        *self.lock_shape()
    }
}
