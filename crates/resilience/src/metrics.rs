//! Metric names and the handles each primitive registers once.
//!
//! Handles are registered at construction through the `metrics` facade, so the
//! hot path only bumps an already-registered counter (no label hashing, no
//! allocation) and every series exists from the start, at 0, as Prometheus
//! practice asks. Without an installed recorder the handles do nothing.

use metrics::{Counter, Gauge, counter, gauge};

use std::time::Duration;

use crate::circuit_breaker::CircuitState;
use crate::gcra::Decision;

/// `circuit_breaker_state{name,state}`: 1 for the breaker's current state, 0 for the others.
pub const CIRCUIT_BREAKER_STATE: &str = "circuit_breaker_state";
/// `circuit_breaker_requests_total{name}`: calls that asked the breaker.
pub const CIRCUIT_BREAKER_REQUESTS_TOTAL: &str = "circuit_breaker_requests_total";
/// `circuit_breaker_failures_total{name}`: outcomes recorded as failures.
pub const CIRCUIT_BREAKER_FAILURES_TOTAL: &str = "circuit_breaker_failures_total";
/// `circuit_breaker_rejected_total{name}`: calls refused while open (or half-open and full).
pub const CIRCUIT_BREAKER_REJECTED_TOTAL: &str = "circuit_breaker_rejected_total";
/// `circuit_breaker_transitions_total{name,to}`: state changes, by new state.
pub const CIRCUIT_BREAKER_TRANSITIONS_TOTAL: &str = "circuit_breaker_transitions_total";
/// `rate_limiter_requests_total{name}`: requests decided (admitted or not).
pub const RATE_LIMITER_REQUESTS_TOTAL: &str = "rate_limiter_requests_total";
/// `rate_limiter_rejected_total{name}`: requests refused.
pub const RATE_LIMITER_REJECTED_TOTAL: &str = "rate_limiter_rejected_total";
/// `rate_limiter_keys{name}`: keys a keyed limiter tracks now.
pub const RATE_LIMITER_KEYS: &str = "rate_limiter_keys";
/// `bulkhead_active_requests{name}`: operations running inside the bulkhead now.
pub const BULKHEAD_ACTIVE_REQUESTS: &str = "bulkhead_active_requests";
/// `bulkhead_queue_size{name}`: callers waiting for a permit now.
pub const BULKHEAD_QUEUE_SIZE: &str = "bulkhead_queue_size";
/// `bulkhead_rejected_total{name}`: callers refused (queue full or wait timed out).
pub const BULKHEAD_REJECTED_TOTAL: &str = "bulkhead_rejected_total";
/// `retry_attempts_total{name}`: retries made (not counting first attempts).
pub const RETRY_ATTEMPTS_TOTAL: &str = "retry_attempts_total";
/// `retry_budget_exhausted_total{name}`: retries skipped because the budget was spent.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "retry_budget_exhausted_total";

/// Describe every metric above to the installed recorder (help text and unit).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        CIRCUIT_BREAKER_STATE,
        "1 for the circuit breaker's current state, 0 otherwise."
    );
    describe_counter!(
        CIRCUIT_BREAKER_REQUESTS_TOTAL,
        "Calls that asked the circuit breaker."
    );
    describe_counter!(
        CIRCUIT_BREAKER_FAILURES_TOTAL,
        "Outcomes the circuit breaker recorded as failures."
    );
    describe_counter!(
        CIRCUIT_BREAKER_REJECTED_TOTAL,
        "Calls the circuit breaker refused."
    );
    describe_counter!(
        CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
        "Circuit breaker state changes, by new state."
    );
    describe_counter!(
        RATE_LIMITER_REQUESTS_TOTAL,
        "Requests the rate limiter decided."
    );
    describe_counter!(
        RATE_LIMITER_REJECTED_TOTAL,
        "Requests the rate limiter refused."
    );
    describe_gauge!(RATE_LIMITER_KEYS, "Keys a keyed rate limiter tracks.");
    describe_gauge!(
        BULKHEAD_ACTIVE_REQUESTS,
        "Operations running inside the bulkhead."
    );
    describe_gauge!(
        BULKHEAD_QUEUE_SIZE,
        "Callers waiting for a bulkhead permit."
    );
    describe_counter!(BULKHEAD_REJECTED_TOTAL, "Callers the bulkhead refused.");
    describe_counter!(RETRY_ATTEMPTS_TOTAL, "Retries made.");
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED_TOTAL,
        "Retries skipped because the retry budget was spent."
    );
}

#[derive(Debug)]
pub(crate) struct LimiterMetrics {
    pub(crate) requests: Counter,
    pub(crate) rejected: Counter,
}

impl LimiterMetrics {
    /// Count a decision and turn it into the limiter's answer: `Ok`, or the
    /// wait until the tokens are available (`None`: never).
    ///
    /// Tokens admitted without a clock read are counted when they are
    /// settled, so `rate_limiter_requests_total` lags by at most the settle
    /// interval.
    #[inline]
    pub(crate) fn account(&self, decision: Decision) -> Result<(), Option<Duration>> {
        match decision {
            Decision::Allowed { settled } => {
                if settled > 0 {
                    self.requests.increment(settled);
                }
                Ok(())
            }
            Decision::Denied { wait_ns } => {
                self.reject();
                Err(Some(Duration::from_nanos(wait_ns)))
            }
            Decision::Impossible => {
                self.reject();
                Err(None)
            }
        }
    }

    pub(crate) fn reject(&self) {
        self.requests.increment(1);
        self.rejected.increment(1);
    }

    pub(crate) fn new(name: &str) -> Self {
        let requests = counter!(RATE_LIMITER_REQUESTS_TOTAL, "name" => name.to_owned());
        let rejected = counter!(RATE_LIMITER_REJECTED_TOTAL, "name" => name.to_owned());
        requests.increment(0);
        rejected.increment(0);
        Self { requests, rejected }
    }
}

#[derive(Debug)]
pub(crate) struct BreakerMetrics {
    pub(crate) requests: Counter,
    pub(crate) failures: Counter,
    pub(crate) rejected: Counter,
    state: [Gauge; 3],
    transitions: [Counter; 3],
}

impl BreakerMetrics {
    pub(crate) fn new(name: &str, initial: CircuitState) -> Self {
        let state = CircuitState::ALL.map(
            |s| gauge!(CIRCUIT_BREAKER_STATE, "name" => name.to_owned(), "state" => s.as_str()),
        );
        let transitions = CircuitState::ALL.map(|s| {
            counter!(CIRCUIT_BREAKER_TRANSITIONS_TOTAL, "name" => name.to_owned(), "to" => s.as_str())
        });
        let m = Self {
            requests: counter!(CIRCUIT_BREAKER_REQUESTS_TOTAL, "name" => name.to_owned()),
            failures: counter!(CIRCUIT_BREAKER_FAILURES_TOTAL, "name" => name.to_owned()),
            rejected: counter!(CIRCUIT_BREAKER_REJECTED_TOTAL, "name" => name.to_owned()),
            state,
            transitions,
        };
        m.requests.increment(0);
        m.failures.increment(0);
        m.rejected.increment(0);
        for t in &m.transitions {
            t.increment(0);
        }
        m.show(initial);
        m
    }

    pub(crate) fn show(&self, current: CircuitState) {
        for (gauge, s) in self.state.iter().zip(CircuitState::ALL) {
            gauge.set(if s == current { 1.0 } else { 0.0 });
        }
    }

    pub(crate) fn transition(&self, to: CircuitState) {
        self.transitions[to.index()].increment(1);
        self.show(to);
    }
}

#[derive(Debug)]
pub(crate) struct BulkheadMetrics {
    pub(crate) active: Gauge,
    pub(crate) queued: Gauge,
    pub(crate) rejected: Counter,
}

impl BulkheadMetrics {
    pub(crate) fn new(name: &str) -> Self {
        let m = Self {
            active: gauge!(BULKHEAD_ACTIVE_REQUESTS, "name" => name.to_owned()),
            queued: gauge!(BULKHEAD_QUEUE_SIZE, "name" => name.to_owned()),
            rejected: counter!(BULKHEAD_REJECTED_TOTAL, "name" => name.to_owned()),
        };
        m.active.set(0.0);
        m.queued.set(0.0);
        m.rejected.increment(0);
        m
    }
}
