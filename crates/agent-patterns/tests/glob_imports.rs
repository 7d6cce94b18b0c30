//! The facade's globs leave the names of common crates free: a user who
//! writes the guide's `use composable_rust_agent_patterns::*;` (and a
//! module's glob) can still import from `core` and from the `metrics` crate.
#![allow(clippy::unwrap_used)]

use composable_rust_agent_patterns::resilience::*;
use composable_rust_agent_patterns::tracing_support::*;
use composable_rust_agent_patterns::*;
use core::fmt::Write as _;
use metrics::counter;

#[test]
fn globs_leave_core_and_metrics_to_the_user() {
    let mut text = String::new();
    write!(text, "{}", core::cmp::max(1, 2)).unwrap();
    assert_eq!(text, "2");
    counter!("glob_imports_test_total").increment(1);
    // The renamed modules are still reachable.
    assert_eq!(
        resilience_metrics::RATE_LIMITER_REJECTED_TOTAL,
        "rate_limiter_rejected_total"
    );
    let _ = prometheus_exporter::describe_known_metrics;
    let _ = genai_spans::ChatSpan::start;
    let _: Option<resilience_retry::RetryPolicy> = None;
    let _: Option<agent_core::AgentError> = None;
    let _ = LogFormat::Json;
    let _ = CircuitState::Closed;
}
