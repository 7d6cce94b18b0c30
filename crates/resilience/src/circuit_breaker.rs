//! Circuit breaker: stop calling a dependency that keeps failing.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_patterns_core::AgentError;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::clock::{Clock, SharedClock, default_clock, duration_nanos};
use crate::config_error::ConfigError;
use crate::metrics::BreakerMetrics;

/// When to open, when to close again, and how long to stay open.
///
/// In the default mode the breaker counts *consecutive* failures while closed:
/// `failure_threshold` of them in a row open it. After `timeout` it lets trial
/// calls through (half-open); `success_threshold` successful trials close it,
/// one failed trial opens it again. See [`CircuitBreakerBuilder`] for sliding
/// failure-rate windows, slow-call detection and other modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open a closed breaker (at least 1).
    pub failure_threshold: u32,
    /// Successful trial calls that close a half-open breaker (at least 1).
    pub success_threshold: u32,
    /// How long the breaker stays open before letting trial calls through.
    pub timeout: Duration,
}

impl Default for CircuitBreakerConfig {
    /// 5 failures, 2 successes, 60 s.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            success_threshold: 2,
            timeout: Duration::from_secs(60),
        }
    }
}

const COMPONENT: &str = "circuit breaker";

impl CircuitBreakerConfig {
    /// Check the values; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "failure_threshold",
                "must be at least 1",
            ));
        }
        if self.success_threshold == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "success_threshold",
                "must be at least 1",
            ));
        }
        if self.success_threshold > MAX_COUNT as u32 || self.failure_threshold > MAX_COUNT as u32 {
            return Err(ConfigError::new(
                COMPONENT,
                "failure_threshold",
                format!("and success_threshold must be at most {MAX_COUNT}"),
            ));
        }
        Ok(())
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are refused until the timeout passes.
    Open,
    /// A limited number of trial calls decide whether to close or reopen.
    HalfOpen,
}

impl CircuitState {
    pub(crate) const ALL: [CircuitState; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    /// The `state` label value: `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    fn from_bits(bits: u64) -> Self {
        match bits & 0b11 {
            0 => Self::Closed,
            1 => Self::Open,
            _ => Self::HalfOpen,
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The call was refused because the breaker is open (or half-open with every
/// trial slot taken).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker '{name}' is open; retry after {retry_after:?}")]
pub struct CircuitBreakerError {
    /// The breaker's name.
    pub name: String,
    /// How long until trial calls are let through (zero when half-open and full).
    pub retry_after: Duration,
}

impl From<CircuitBreakerError> for AgentError {
    fn from(_: CircuitBreakerError) -> Self {
        AgentError::CircuitBreakerOpen
    }
}

/// What [`CircuitBreaker::call`] returns when it does not return the call's own result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker refused the call.
    #[error(transparent)]
    Open(CircuitBreakerError),
    /// The call ran and failed.
    #[error("{0}")]
    Failed(E),
}

impl<E: Into<AgentError>> From<CallError<E>> for AgentError {
    fn from(e: CallError<E>) -> Self {
        match e {
            CallError::Open(open) => open.into(),
            CallError::Failed(inner) => inner.into(),
        }
    }
}

/// How the breaker behaves, switchable at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerMode {
    /// The state machine decides.
    Normal,
    /// Every call is refused (operator action).
    ForcedOpen,
    /// Every call is allowed and nothing is recorded.
    Disabled,
    /// Every call is allowed; outcomes are recorded and transitions happen and
    /// are reported, but nothing is refused (to tune thresholds safely).
    MetricsOnly,
}

impl BreakerMode {
    fn to_bits(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::ForcedOpen => 1,
            Self::Disabled => 2,
            Self::MetricsOnly => 3,
        }
    }

    fn from_bits(b: u8) -> Self {
        match b {
            1 => Self::ForcedOpen,
            2 => Self::Disabled,
            3 => Self::MetricsOnly,
            _ => Self::Normal,
        }
    }
}

/// How failures open the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureDetection {
    /// `failure_threshold` consecutive failures (the default).
    Consecutive,
    /// Failure and slow-call rates over a sliding window of the last calls.
    SlidingWindow(SlidingWindow),
}

/// What a sliding window covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `duration`, kept in one-second buckets.
    Time(Duration),
}

/// Rate-based opening, as resilience4j does it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Which calls the rates are computed over.
    pub kind: WindowKind,
    /// Open when at least this share of calls failed (0.0–1.0).
    pub failure_rate_threshold: f64,
    /// Open when at least this share of calls were slow (0.0–1.0; above 1.0 disables).
    pub slow_call_rate_threshold: f64,
    /// A call that took at least this long is slow.
    pub slow_call_duration: Duration,
    /// No decision before this many calls are in the window.
    pub minimum_calls: u32,
}

impl Default for SlidingWindow {
    /// Last 100 calls, 50 % failures, slow calls (≥ 60 s) ignored, at least 10 calls.
    fn default() -> Self {
        Self {
            kind: WindowKind::Count(100),
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.1,
            slow_call_duration: Duration::from_secs(60),
            minimum_calls: 10,
        }
    }
}

impl SlidingWindow {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            WindowKind::Count(0) => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "sliding_window.kind",
                    "count must be at least 1",
                ));
            }
            WindowKind::Time(d) if d < Duration::from_secs(1) => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "sliding_window.kind",
                    "time window must be at least 1 s",
                ));
            }
            WindowKind::Time(d) if d > Duration::from_secs(3600) => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "sliding_window.kind",
                    "time window must be at most 1 h",
                ));
            }
            _ => {}
        }
        for (field, v) in [
            (
                "sliding_window.failure_rate_threshold",
                self.failure_rate_threshold,
            ),
            (
                "sliding_window.slow_call_rate_threshold",
                self.slow_call_rate_threshold,
            ),
        ] {
            if v.is_nan() || v <= 0.0 {
                return Err(ConfigError::new(
                    COMPONENT,
                    field,
                    format!("must be above 0 (got {v})"),
                ));
            }
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "sliding_window.minimum_calls",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A state change, sent to [`CircuitBreaker::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTransition {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
}

/// Figures for dashboards; see [`CircuitBreaker::metrics`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitBreakerMetrics {
    /// The breaker's name.
    pub name: String,
    /// Current state.
    pub state: CircuitState,
    /// Calls that asked the breaker (allowed or refused).
    pub total_requests: u64,
    /// Admitted calls not recorded as failures (successes, and calls still running).
    pub successful_requests: u64,
    /// Outcomes recorded as failures.
    pub failed_requests: u64,
    /// Calls refused.
    pub rejected_requests: u64,
    /// Failures / admitted calls since creation (0.0 when none).
    pub failure_rate: f64,
    /// Consecutive failures while closed.
    pub consecutive_failures: u32,
    /// Times the breaker opened.
    pub times_opened: u64,
}

// ── state word ──────────────────────────────────────────────────────────────
// bits 0..2   state (0 closed, 1 open, 2 half-open)
// bits 2..32  count: consecutive failures (closed) / successful trials (half-open)
// bits 32..48 trial calls in flight (half-open)
// bits 48..64 generation, bumped on every transition: an outcome admitted in an
//             earlier generation does not count in the current one.
const MAX_COUNT: u64 = (1 << 30) - 1;
const MAX_TRIALS: u64 = (1 << 16) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    state: CircuitState,
    count: u64,
    trials: u64,
    generation: u64,
}

impl Word {
    fn unpack(w: u64) -> Self {
        Self {
            state: CircuitState::from_bits(w),
            count: (w >> 2) & MAX_COUNT,
            trials: (w >> 32) & MAX_TRIALS,
            generation: w >> 48,
        }
    }

    fn pack(self) -> u64 {
        (self.state.index() as u64)
            | (self.count.min(MAX_COUNT) << 2)
            | (self.trials.min(MAX_TRIALS) << 32)
            | ((self.generation & 0xFFFF) << 48)
    }

    fn enter(self, state: CircuitState) -> Self {
        Self {
            state,
            count: 0,
            trials: 0,
            generation: (self.generation + 1) & 0xFFFF,
        }
    }
}

/// A permission to make one call, from [`CircuitBreaker::acquire_permission`].
///
/// Report the outcome with [`success`](Self::success), [`failure`](Self::failure)
/// or [`record`](Self::record). Dropping it without an outcome (the call was
/// cancelled) frees its half-open trial slot without counting anything, so a
/// cancelled trial never wedges the breaker.
#[derive(Debug)]
#[must_use = "report the call's outcome on the permit"]
pub struct CallPermit<'a> {
    breaker: &'a CircuitBreaker,
    ticket: Ticket,
}

/// What a granted call must report back: which state admitted it, whether it
/// holds a half-open trial slot, when it started (for slow-call detection),
/// and whether its outcome was reported.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    generation: u64,
    trial: bool,
    started: u64,
    done: bool,
}

impl CallPermit<'_> {
    /// The call succeeded.
    #[inline]
    pub fn success(self) {
        self.record(true);
    }

    /// The call failed.
    pub fn failure(self) {
        self.record(false);
    }

    /// Report the outcome; the call's duration (for slow-call detection) is
    /// measured from when the permit was granted.
    #[inline]
    pub fn record(mut self, success: bool) {
        self.breaker.settle(&mut self.ticket, success);
    }
}

impl Drop for CallPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.breaker.abandon(&self.ticket);
    }
}

/// Like [`CallPermit`], but owning its breaker: for futures that must be
/// `'static` (tower services, spawned tasks).
#[derive(Debug)]
#[must_use = "report the call's outcome on the permit"]
pub struct OwnedCallPermit {
    breaker: Arc<CircuitBreaker>,
    ticket: Ticket,
}

impl OwnedCallPermit {
    /// Report the outcome (see [`CallPermit::record`]).
    #[inline]
    pub fn record(mut self, success: bool) {
        self.breaker.settle(&mut self.ticket, success);
    }
}

impl Drop for OwnedCallPermit {
    #[inline]
    fn drop(&mut self) {
        self.breaker.abandon(&self.ticket);
    }
}

pin_project_lite::pin_project! {
    /// The future of [`CircuitBreaker::call`]: the call's result, or
    /// [`CallError::Open`] when the breaker refused it.
    ///
    /// Permission is asked on the first poll and kept in the pinned future,
    /// so nothing but the wrapped future moves with it; dropping it unfinished
    /// gives back a half-open trial slot.
    #[must_use = "futures do nothing unless awaited"]
    pub struct CallFuture<'a, F, C> {
        #[pin]
        inner: F,
        breaker: &'a CircuitBreaker,
        // Granted and not yet settled.
        ticket: Option<Ticket>,
        asked: bool,
        is_success: Option<C>,
    }

    impl<'a, F, C> PinnedDrop for CallFuture<'a, F, C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(ticket) = this.ticket.take() {
                this.breaker.abandon(&ticket);
            }
        }
    }
}

impl<T, E, F, C> Future for CallFuture<'_, F, C>
where
    F: Future<Output = Result<T, E>>,
    C: FnOnce(&Result<T, E>) -> bool,
{
    type Output = Result<T, CallError<E>>;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if !*this.asked {
            *this.asked = true;
            match this.breaker.ticket() {
                Ok(ticket) => *this.ticket = Some(ticket),
                Err(open) => return std::task::Poll::Ready(Err(CallError::Open(open))),
            }
        }
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Some(mut ticket), Some(is_success)) = (this.ticket.take(), this.is_success.take()) {
            this.breaker.settle(&mut ticket, is_success(&result));
        }
        std::task::Poll::Ready(result.map_err(CallError::Failed))
    }
}

/// Stops calls to a failing dependency, then probes whether it recovered.
///
/// In the closed state, asking for permission and recording a success take no
/// lock and read no clock: one atomic load each, plus counters.
///
/// ```
/// use std::time::Duration;
/// use agent_patterns_resilience::*;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let breaker = CircuitBreaker::new("llm".to_string(), CircuitBreakerConfig {
///     failure_threshold: 2,
///     success_threshold: 1,
///     timeout: Duration::from_secs(30),
/// });
/// for _ in 0..2 {
///     breaker.allow_request().await.unwrap();
///     breaker.record_failure().await;
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
/// assert!(breaker.allow_request().await.is_err());
///
/// tokio::time::advance(Duration::from_secs(30)).await;
/// breaker.allow_request().await.unwrap(); // trial call
/// breaker.record_success().await;
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// # }
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    name: Arc<str>,
    word: AtomicU64,
    opened_at: AtomicU64,
    mode: AtomicU8,
    failure_threshold: AtomicU32,
    success_threshold: AtomicU32,
    timeout_ns: AtomicU64,
    max_trials: AtomicU32,
    detection: FailureDetection,
    window: Option<Mutex<Window>>,
    total: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    opened: AtomicU64,
    clock: SharedClock,
    events: broadcast::Sender<StateTransition>,
    metrics: BreakerMetrics,
}

/// Builds a [`CircuitBreaker`] with settings beyond [`CircuitBreakerConfig`].
#[derive(Debug)]
#[must_use]
pub struct CircuitBreakerBuilder {
    name: String,
    config: CircuitBreakerConfig,
    detection: FailureDetection,
    max_half_open_calls: Option<u32>,
    mode: BreakerMode,
    clock: Option<SharedClock>,
    event_capacity: usize,
}

impl CircuitBreakerBuilder {
    /// Open on failure/slow-call rates over a sliding window instead of
    /// consecutive failures.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.detection = FailureDetection::SlidingWindow(window);
        self
    }

    /// Trial calls allowed at the same time while half-open (default:
    /// `success_threshold`).
    pub fn max_half_open_calls(mut self, calls: u32) -> Self {
        self.max_half_open_calls = Some(calls);
        self
    }

    /// Start in `mode`.
    pub fn mode(mut self, mode: BreakerMode) -> Self {
        self.mode = mode;
        self
    }

    /// Read time from `clock` instead of tokio's clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Transitions buffered for slow subscribers (default 64; the oldest are
    /// dropped for a subscriber that falls behind).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.config.validate()?;
        if let FailureDetection::SlidingWindow(w) = &self.detection {
            w.validate()?;
        }
        let max_trials = self
            .max_half_open_calls
            .unwrap_or(self.config.success_threshold);
        if max_trials == 0 || u64::from(max_trials) > MAX_TRIALS {
            return Err(ConfigError::new(
                COMPONENT,
                "max_half_open_calls",
                format!("must be between 1 and {MAX_TRIALS}"),
            ));
        }
        if self.event_capacity == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "event_capacity",
                "must be at least 1",
            ));
        }
        Ok(CircuitBreaker::assemble(self, max_trials))
    }
}

impl CircuitBreaker {
    /// A breaker named `name` (the `name` label of its metrics).
    ///
    /// Thresholds of 0 are raised to 1 (and logged) rather than panicking; use
    /// [`CircuitBreaker::try_new`] to get the error instead.
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> Self {
        let name = name.into();
        let fixed = CircuitBreakerConfig {
            failure_threshold: config.failure_threshold.clamp(1, MAX_COUNT as u32),
            success_threshold: config.success_threshold.clamp(1, MAX_COUNT as u32),
            timeout: config.timeout,
        };
        if fixed != config {
            tracing::error!(breaker = %name, ?config, "thresholds out of range; clamped");
        }
        let builder = Self::builder(name, fixed);
        let max_trials = fixed.success_threshold.min(MAX_TRIALS as u32);
        Self::assemble(builder, max_trials)
    }

    /// A breaker, or the reason the configuration is invalid.
    pub fn try_new(
        name: impl Into<String>,
        config: CircuitBreakerConfig,
    ) -> Result<Self, ConfigError> {
        Self::builder(name, config).build()
    }

    /// A builder for sliding windows, half-open limits, modes and clocks.
    pub fn builder(name: impl Into<String>, config: CircuitBreakerConfig) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            name: name.into(),
            config,
            detection: FailureDetection::Consecutive,
            max_half_open_calls: None,
            mode: BreakerMode::Normal,
            clock: None,
            event_capacity: 64,
        }
    }

    fn assemble(b: CircuitBreakerBuilder, max_trials: u32) -> Self {
        let (events, _) = broadcast::channel(b.event_capacity.max(1));
        let window = match b.detection {
            FailureDetection::Consecutive => None,
            FailureDetection::SlidingWindow(w) => Some(Mutex::new(Window::new(w))),
        };
        let metrics = BreakerMetrics::new(&b.name, CircuitState::Closed);
        Self {
            name: b.name.into(),
            word: AtomicU64::new(0),
            opened_at: AtomicU64::new(0),
            mode: AtomicU8::new(b.mode.to_bits()),
            failure_threshold: AtomicU32::new(b.config.failure_threshold),
            success_threshold: AtomicU32::new(b.config.success_threshold),
            timeout_ns: AtomicU64::new(duration_nanos(b.config.timeout)),
            max_trials: AtomicU32::new(max_trials),
            detection: b.detection,
            window,
            total: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            clock: b.clock.unwrap_or_else(default_clock),
            events,
            metrics,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ask to make a call. `Err` means the breaker is open: fail fast.
    ///
    /// When the open timeout has passed, this moves the breaker to half-open
    /// and grants one of its trial slots. Report the outcome with
    /// [`record_success`](Self::record_success) or
    /// [`record_failure`](Self::record_failure).
    pub async fn allow_request(&self) -> Result<(), CircuitBreakerError> {
        self.permit().map(|_| ())
    }

    /// Like [`allow_request`](Self::allow_request), but returns a permit that
    /// records the outcome itself and frees its trial slot if dropped unused.
    #[inline]
    pub fn acquire_permission(&self) -> Result<CallPermit<'_>, CircuitBreakerError> {
        Ok(CallPermit {
            breaker: self,
            ticket: self.ticket()?,
        })
    }

    /// [`acquire_permission`](Self::acquire_permission) for a breaker in an `Arc`,
    /// returning a permit that owns a reference to it.
    pub fn acquire_owned(self: &Arc<Self>) -> Result<OwnedCallPermit, CircuitBreakerError> {
        Ok(OwnedCallPermit {
            breaker: Arc::clone(self),
            ticket: self.ticket()?,
        })
    }

    /// Grant a call and note what it must report back.
    #[inline]
    fn ticket(&self) -> Result<Ticket, CircuitBreakerError> {
        let (generation, trial) = self.permit()?;
        Ok(Ticket {
            generation,
            trial,
            started: self.started_at(),
            done: false,
        })
    }

    /// Record a granted call's outcome.
    #[inline]
    fn settle(&self, ticket: &mut Ticket, success: bool) {
        ticket.done = true;
        let duration = self.elapsed_since(ticket.started);
        self.outcome(success, duration, Some(ticket.generation), ticket.trial);
    }

    /// A granted call ended without an outcome (cancelled): free its trial slot.
    #[inline]
    fn abandon(&self, ticket: &Ticket) {
        if !ticket.done && ticket.trial {
            self.release_trial(ticket.generation);
        }
    }

    /// Run `call` through the breaker: refused at once when open, otherwise
    /// its `Ok`/`Err` is recorded as success/failure.
    #[inline]
    pub fn call<T, E, F>(&self, call: F) -> CallFuture<'_, F, impl FnOnce(&Result<T, E>) -> bool>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_classified(call, |result: &Result<T, E>| result.is_ok())
    }

    /// Run `call` through the breaker, with `is_success` deciding which
    /// outcomes count as successes (e.g. a client error is not the
    /// dependency's fault).
    ///
    /// Permission is asked when the returned future is first polled; it then
    /// runs `call` (or fails at once when refused) and records the outcome.
    /// Dropping the future unfinished frees a half-open trial slot.
    #[inline]
    pub fn call_classified<T, E, F, C>(&self, call: F, is_success: C) -> CallFuture<'_, F, C>
    where
        F: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> bool,
    {
        CallFuture {
            inner: call,
            breaker: self,
            ticket: None,
            asked: false,
            is_success: Some(is_success),
        }
    }

    /// Record a successful call.
    pub async fn record_success(&self) {
        self.outcome(true, None, None, true);
    }

    /// Record a failed call.
    pub async fn record_failure(&self) {
        self.outcome(false, None, None, true);
    }

    /// Record an outcome with the call's duration (for slow-call detection).
    pub fn record_outcome(&self, success: bool, duration: Duration) {
        self.outcome(success, Some(duration), None, true);
    }

    /// The current state. An open breaker whose timeout has passed still
    /// reports `Open` until the next call asks.
    pub fn state(&self) -> CircuitState {
        Word::unpack(self.word.load(Ordering::Acquire)).state
    }

    /// The current mode.
    pub fn mode(&self) -> BreakerMode {
        BreakerMode::from_bits(self.mode.load(Ordering::Acquire))
    }

    /// Switch mode at run time (forced open, disabled, metrics only, normal).
    pub fn set_mode(&self, mode: BreakerMode) {
        self.mode.store(mode.to_bits(), Ordering::Release);
        tracing::info!(breaker = %self.name, ?mode, "circuit breaker mode changed");
    }

    /// Counts and rates since creation.
    pub fn metrics(&self) -> CircuitBreakerMetrics {
        let w = Word::unpack(self.word.load(Ordering::Acquire));
        let total = self.total.load(Ordering::Relaxed);
        let rejected = self.rejected.load(Ordering::Relaxed);
        let failures = self.failures.load(Ordering::Relaxed);
        // Counting successes separately would cost the closed hot path an
        // atomic add; admitted calls that did not fail are successes (or
        // still running).
        let admitted = total.saturating_sub(rejected).max(failures);
        CircuitBreakerMetrics {
            name: self.name.to_string(),
            state: w.state,
            total_requests: total,
            successful_requests: admitted - failures,
            failed_requests: failures,
            rejected_requests: rejected,
            failure_rate: if admitted == 0 {
                0.0
            } else {
                failures as f64 / admitted as f64
            },
            consecutive_failures: if w.state == CircuitState::Closed
                && self.detection == FailureDetection::Consecutive
            {
                w.count as u32
            } else {
                0
            },
            times_opened: self.opened.load(Ordering::Relaxed),
        }
    }

    /// Close the breaker and forget recent failures (emergency use).
    pub async fn force_reset(&self) {
        self.reset();
    }

    /// [`force_reset`](Self::force_reset) without `async`.
    pub fn reset(&self) {
        if let Some(window) = &self.window {
            window
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let w = Word::unpack(current);
            let next = w.enter(CircuitState::Closed);
            match self.word.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if w.state != CircuitState::Closed {
                        self.announce(w.state, CircuitState::Closed);
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Change thresholds and timeout at run time. Invalid values (0) are
    /// ignored and logged; see [`try_update_config`](Self::try_update_config).
    pub fn update_config(&self, config: CircuitBreakerConfig) {
        if let Err(e) = self.try_update_config(config) {
            tracing::error!(breaker = %self.name, error = %e, "configuration not changed");
        }
    }

    /// Change thresholds and timeout, or say why the values are invalid.
    pub fn try_update_config(&self, config: CircuitBreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.failure_threshold
            .store(config.failure_threshold, Ordering::Release);
        self.success_threshold
            .store(config.success_threshold, Ordering::Release);
        self.timeout_ns
            .store(duration_nanos(config.timeout), Ordering::Release);
        Ok(())
    }

    /// The current thresholds and timeout.
    pub fn config(&self) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_threshold: self.failure_threshold.load(Ordering::Acquire),
            success_threshold: self.success_threshold.load(Ordering::Acquire),
            timeout: Duration::from_nanos(self.timeout_ns.load(Ordering::Acquire)),
        }
    }

    /// Receive every state transition from now on. The channel is bounded; a
    /// receiver that falls behind loses the oldest transitions (and is told so
    /// by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<StateTransition> {
        self.events.subscribe()
    }

    /// How long until an open breaker lets trial calls through (zero otherwise).
    pub fn retry_after(&self) -> Duration {
        let w = Word::unpack(self.word.load(Ordering::Acquire));
        if w.state != CircuitState::Open {
            return Duration::ZERO;
        }
        let reopen = self
            .opened_at
            .load(Ordering::Acquire)
            .saturating_add(self.timeout_ns.load(Ordering::Acquire));
        Duration::from_nanos(reopen.saturating_sub(self.clock.now_nanos()))
    }

    // ── internals ───────────────────────────────────────────────────────────

    /// Grant or refuse a call. Returns the generation and whether it is a trial.
    #[inline]
    fn permit(&self) -> Result<(u64, bool), CircuitBreakerError> {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.metrics.requests.increment(1);
        let mode = BreakerMode::from_bits(self.mode.load(Ordering::Relaxed));
        match mode {
            BreakerMode::Normal => {}
            BreakerMode::Disabled => return Ok((u64::MAX, false)),
            BreakerMode::ForcedOpen => return Err(self.refuse(Duration::MAX)),
            BreakerMode::MetricsOnly => {
                let w = Word::unpack(self.word.load(Ordering::Acquire));
                return Ok((w.generation, false));
            }
        }
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let w = Word::unpack(current);
            let next = match w.state {
                CircuitState::Closed => return Ok((w.generation, false)),
                CircuitState::Open => {
                    let now = self.clock.now_nanos();
                    let reopen = self
                        .opened_at
                        .load(Ordering::Acquire)
                        .saturating_add(self.timeout_ns.load(Ordering::Acquire));
                    if now < reopen {
                        return Err(self.refuse(Duration::from_nanos(reopen - now)));
                    }
                    self.opened_at.store(now, Ordering::Release);
                    Word {
                        trials: 1,
                        ..w.enter(CircuitState::HalfOpen)
                    }
                }
                CircuitState::HalfOpen => {
                    let max = u64::from(self.max_trials.load(Ordering::Relaxed));
                    if w.trials < max {
                        Word {
                            trials: w.trials + 1,
                            ..w
                        }
                    } else {
                        // Every slot is taken. Slots whose callers never
                        // reported back are reclaimed after the timeout.
                        let now = self.clock.now_nanos();
                        let granted = self.opened_at.load(Ordering::Acquire);
                        if now < granted.saturating_add(self.timeout_ns.load(Ordering::Acquire)) {
                            return Err(self.refuse(Duration::ZERO));
                        }
                        self.opened_at.store(now, Ordering::Release);
                        Word { trials: 1, ..w }
                    }
                }
            };
            match self.word.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if w.state == CircuitState::Open {
                        self.announce(CircuitState::Open, CircuitState::HalfOpen);
                    }
                    return Ok((next.generation, true));
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether outcomes need their duration (slow-call detection is on).
    #[inline]
    fn times_calls(&self) -> bool {
        matches!(&self.detection, FailureDetection::SlidingWindow(w) if w.slow_call_rate_threshold <= 1.0)
    }

    /// A permit's start time; the clock is read only when durations matter.
    #[inline]
    fn started_at(&self) -> u64 {
        if self.times_calls() {
            self.clock.now_nanos()
        } else {
            0
        }
    }

    #[inline]
    fn elapsed_since(&self, started: u64) -> Option<Duration> {
        self.times_calls()
            .then(|| Duration::from_nanos(self.clock.now_nanos().saturating_sub(started)))
    }

    fn refuse(&self, retry_after: Duration) -> CircuitBreakerError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected.increment(1);
        CircuitBreakerError {
            name: self.name.to_string(),
            retry_after,
        }
    }

    fn release_trial(&self, generation: u64) {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let w = Word::unpack(current);
            if w.state != CircuitState::HalfOpen || w.generation != generation || w.trials == 0 {
                return;
            }
            let next = Word {
                trials: w.trials - 1,
                ..w
            };
            match self.word.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Apply an outcome. `generation` is the permit's (None: the guide's
    /// allow/record pair, which cannot say which state admitted the call).
    #[inline]
    fn outcome(
        &self,
        success: bool,
        duration: Option<Duration>,
        generation: Option<u64>,
        trial: bool,
    ) {
        let mode = BreakerMode::from_bits(self.mode.load(Ordering::Relaxed));
        if mode == BreakerMode::Disabled {
            return;
        }
        if !success {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.metrics.failures.increment(1);
        }
        let slow = match (&self.detection, duration) {
            (FailureDetection::SlidingWindow(w), Some(d)) => d >= w.slow_call_duration,
            _ => false,
        };
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let w = Word::unpack(current);
            if let Some(g) = generation
                && g != w.generation
            {
                return; // admitted under an earlier state: stale outcome
            }
            let next = match w.state {
                CircuitState::Open => return,
                CircuitState::Closed => match &self.window {
                    None => {
                        if success {
                            if w.count == 0 {
                                return;
                            }
                            Word { count: 0, ..w }
                        } else {
                            let count = w.count + 1;
                            if count >= u64::from(self.failure_threshold.load(Ordering::Acquire)) {
                                w.enter(CircuitState::Open)
                            } else {
                                Word { count, ..w }
                            }
                        }
                    }
                    Some(window) => {
                        let now = self.clock.now_nanos();
                        let trip = window
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .record(now, success, slow);
                        if !trip {
                            return;
                        }
                        w.enter(CircuitState::Open)
                    }
                },
                CircuitState::HalfOpen => {
                    let trials = if trial {
                        w.trials.saturating_sub(1)
                    } else {
                        w.trials
                    };
                    if success && !slow {
                        let count = w.count + 1;
                        if count >= u64::from(self.success_threshold.load(Ordering::Acquire)) {
                            w.enter(CircuitState::Closed)
                        } else {
                            Word { count, trials, ..w }
                        }
                    } else {
                        w.enter(CircuitState::Open)
                    }
                }
            };
            if next.state == CircuitState::Open && w.state != CircuitState::Open {
                self.opened_at
                    .store(self.clock.now_nanos(), Ordering::Release);
            }
            match self.word.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if next.state != w.state {
                        if let Some(window) = &self.window {
                            window
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .clear();
                        }
                        self.announce(w.state, next.state);
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    fn announce(&self, from: CircuitState, to: CircuitState) {
        if to == CircuitState::Open {
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(breaker = %self.name, %from, "circuit breaker opened");
        } else {
            tracing::info!(breaker = %self.name, %from, %to, "circuit breaker state changed");
        }
        self.metrics.transition(to);
        // No subscriber is not an error.
        let _ = self.events.send(StateTransition {
            name: Arc::clone(&self.name),
            from,
            to,
        });
    }
}

/// Outcomes of recent calls, for rate-based opening.
#[derive(Debug)]
struct Window {
    config: SlidingWindow,
    /// Count window: one entry per call. Time window: one entry per second.
    buckets: VecDeque<Bucket>,
    totals: Bucket,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Window {
    fn new(config: SlidingWindow) -> Self {
        Self {
            config,
            buckets: VecDeque::new(),
            totals: Bucket::default(),
        }
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.totals = Bucket::default();
    }

    fn evict(&mut self, bucket: Bucket) {
        self.totals.calls -= bucket.calls;
        self.totals.failures -= bucket.failures;
        self.totals.slow -= bucket.slow;
    }

    /// Record one call; returns whether the breaker should open.
    fn record(&mut self, now_ns: u64, success: bool, slow: bool) -> bool {
        let entry = Bucket {
            second: now_ns / 1_000_000_000,
            calls: 1,
            failures: u64::from(!success),
            slow: u64::from(slow),
        };
        match self.config.kind {
            WindowKind::Count(size) => {
                if self.buckets.len() as u64 >= u64::from(size)
                    && let Some(old) = self.buckets.pop_front()
                {
                    self.evict(old);
                }
                self.buckets.push_back(entry);
            }
            WindowKind::Time(span) => {
                let horizon = entry.second.saturating_sub(span.as_secs().max(1) - 1);
                while let Some(old) = self.buckets.front().copied() {
                    if old.second >= horizon {
                        break;
                    }
                    self.buckets.pop_front();
                    self.evict(old);
                }
                match self.buckets.back_mut() {
                    Some(last) if last.second == entry.second => {
                        last.calls += 1;
                        last.failures += entry.failures;
                        last.slow += entry.slow;
                    }
                    _ => self.buckets.push_back(entry),
                }
            }
        }
        self.totals.calls += 1;
        self.totals.failures += entry.failures;
        self.totals.slow += entry.slow;
        if self.totals.calls < u64::from(self.config.minimum_calls) {
            return false;
        }
        let calls = self.totals.calls as f64;
        self.totals.failures as f64 / calls >= self.config.failure_rate_threshold
            || self.totals.slow as f64 / calls >= self.config.slow_call_rate_threshold
    }
}
