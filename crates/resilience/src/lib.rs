//! Resilience primitives for the calls an AI agent makes: circuit breaker,
//! rate limiter (plain and keyed), bulkhead, retry with a shared budget, and
//! timeouts, each usable on its own, stacked in a [`Pipeline`], or as a tower
//! [`Layer`](tower::Layer).
//!
//! Every primitive:
//! * keeps its hot-path state in atomics — a closed breaker, a limiter
//!   decision and a free bulkhead slot take no lock and allocate nothing;
//! * follows tokio's clock, so `tokio::time::pause()` and `advance()` drive
//!   every timeout and refill in tests;
//! * emits the Prometheus-style metrics listed in [`metrics`] through the
//!   `metrics` facade, with handles registered once at construction;
//! * converts its errors into [`AgentError`](agent_patterns_core::AgentError)
//!   so `?` works in agent code.
//!
//! # Example: the guide's resilient LLM call
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use agent_patterns_core::AgentError;
//! use agent_patterns_resilience::*;
//!
//! struct Llm {
//!     rate_limiter: Arc<RateLimiter>,
//!     circuit_breaker: Arc<CircuitBreaker>,
//! }
//!
//! impl Llm {
//!     async fn call(&self, prompt: &str) -> Result<String, AgentError> {
//!         self.rate_limiter.try_acquire(1).await?;
//!         self.circuit_breaker.allow_request().await?;
//!         let result = tokio::time::timeout(Duration::from_secs(30), async {
//!             Ok::<_, AgentError>(format!("echo: {prompt}"))
//!         })
//!         .await?;
//!         match &result {
//!             Ok(_) => self.circuit_breaker.record_success().await,
//!             Err(_) => self.circuit_breaker.record_failure().await,
//!         }
//!         result
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), AgentError> {
//! let llm = Llm {
//!     rate_limiter: Arc::new(RateLimiter::new("llm".to_string(), RateLimiterConfig {
//!         capacity: 100,
//!         refill_rate: 10.0,
//!     })),
//!     circuit_breaker: Arc::new(CircuitBreaker::new("llm".to_string(), CircuitBreakerConfig {
//!         failure_threshold: 5,
//!         success_threshold: 2,
//!         timeout: Duration::from_secs(60),
//!     })),
//! };
//! assert_eq!(llm.call("hi").await?, "echo: hi");
//! # Ok(())
//! # }
//! ```

pub mod bulkhead;
pub mod circuit_breaker;
pub mod clock;
mod config_error;
mod gcra;
pub mod keyed;
pub mod layer;
pub mod metrics;
pub mod pipeline;
pub mod rate_limiter;
pub mod registry;
pub mod retry;
pub mod timeout;

pub use bulkhead::{
    Bulkhead, BulkheadConfig, BulkheadError, BulkheadPermit, BulkheadSnapshot, DEFAULT_MAX_QUEUE,
    OwnedBulkheadPermit,
};
pub use circuit_breaker::{
    BreakerMode, CallError, CallFuture, CallPermit, CircuitBreaker, CircuitBreakerBuilder,
    CircuitBreakerConfig, CircuitBreakerError, CircuitBreakerMetrics, CircuitState,
    FailureDetection, OwnedCallPermit, SlidingWindow, StateTransition, WindowKind,
};
pub use clock::{Clock, ManualClock, TokioClock};
pub use config_error::ConfigError;
pub use keyed::KeyedRateLimiter;
pub use layer::{
    BulkheadLayer, CircuitBreakerLayer, ErrorKind, KeyedRateLimitLayer, RateLimitLayer,
    ResilienceError, TimeoutLayer,
};
pub use pipeline::{Pipeline, PipelineBuilder};
pub use rate_limiter::{
    AcquireError, RateLimiter, RateLimiterBuilder, RateLimiterConfig, RateLimiterError,
    RateLimiterSnapshot, Reservation,
};
pub use registry::{CircuitBreakerRegistry, RegistryFull};
pub use retry::{
    Jitter, Retry, RetryBudget, RetryDecision, RetryError, RetryPolicy, retry_temporary,
};
pub use timeout::{TimeoutError, with_fallback, with_timeout};
