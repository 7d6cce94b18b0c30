//! Log lines join traces: every line inside a span carries its ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use agent_patterns_tracing_support::*;
use support::LogBuffer;

fn pipeline(format: LogFormat, filter: &str) -> (tracing::Dispatch, TracingGuard, LogBuffer) {
    let logs = LogBuffer::default();
    let (dispatch, guard) = TracingBuilder::new("log-test")
        .ignore_environment()
        .log_format(format)
        .log_filter(filter)
        .log_writer(logs.clone())
        .build()
        .unwrap();
    (dispatch, guard, logs)
}

#[tokio::test]
async fn text_lines_inside_spans_carry_trace_and_span_ids() {
    let (dispatch, guard, logs) = pipeline(LogFormat::Text, "info");
    let ids = tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!("outside");
        let span = tracing::info_span!("request", user_id = 7);
        let _entered = span.enter();
        tracing::info!(tool = "search", "inside");
        current_trace_ids().unwrap()
    });
    let text = logs.contents();
    let outside = text.lines().find(|l| l.contains("outside")).unwrap();
    assert!(!outside.contains("trace_id="), "{outside}");
    let inside = text.lines().find(|l| l.contains("inside")).unwrap();
    assert!(
        inside.contains(&format!("trace_id={} span_id={}", ids.0, ids.1)),
        "{inside}"
    );
    assert!(inside.contains("request{user_id=7}:"), "{inside}");
    assert!(inside.contains("tool=\"search\""), "{inside}");
    assert!(inside.contains(" INFO "), "{inside}");
    guard.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_lines_are_objects_with_span_fields_and_ids() {
    let (dispatch, guard, logs) = pipeline(LogFormat::Json, "info");
    let (outer_trace, inner_span) = tracing::dispatcher::with_default(&dispatch, || {
        let outer = tracing::info_span!("request", session = "s-1");
        let _o = outer.enter();
        let outer_ids = current_trace_ids().unwrap();
        let inner = tracing::info_span!("llm_call");
        let _i = inner.enter();
        tracing::warn!(retry = 2_u64, "slow");
        (outer_ids.0, current_trace_ids().unwrap().1)
    });
    let line: serde_json::Value =
        serde_json::from_str(logs.contents().lines().next().unwrap()).unwrap();
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["message"], "slow");
    assert_eq!(line["fields"]["retry"], 2);
    assert_eq!(line["span"]["name"], "llm_call");
    assert_eq!(line["spans"], serde_json::json!(["request", "llm_call"]));
    assert_eq!(line["trace_id"], outer_trace.as_str());
    assert_eq!(line["span_id"], inner_span.as_str());
    guard.shutdown().await.unwrap();
}

#[tokio::test]
async fn filter_directives_drop_lower_levels() {
    let (dispatch, guard, logs) = pipeline(LogFormat::Json, "warn,log_lines=debug");
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(target: "other", "hidden");
        tracing::debug!("shown");
    });
    let text = logs.contents();
    assert!(!text.contains("hidden"));
    assert!(text.contains("shown"));
    guard.shutdown().await.unwrap();
}
