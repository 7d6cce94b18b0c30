//! `/metrics` renders the guide's metric names with the right Prometheus
//! types, histograms with buckets, and passes `promtool check metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use agent_patterns_tracing_support::*;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use http_body_util::BodyExt as _;
use prometheus_parse::{Scrape, Value};
use tower::ServiceExt as _;

/// Emits one sample of each metric the guide lists (the other crates emit
/// them in production) plus the ones this crate emits itself.
async fn emit_guide_metrics() {
    metrics::counter!("agent_tool_calls_total", "tool" => "search", "status" => "success")
        .increment(1250);
    metrics::counter!("agent_tool_calls_total", "tool" => "search", "status" => "failure")
        .increment(15);
    metrics::histogram!("agent_tool_latency_seconds", "tool" => "search").record(0.25);
    metrics::gauge!("circuit_breaker_state", "name" => "llm", "state" => "closed").set(1.0);
    metrics::counter!("circuit_breaker_requests_total", "name" => "llm").increment(5420);
    metrics::counter!("circuit_breaker_failures_total", "name" => "llm").increment(12);
    metrics::counter!("rate_limiter_requests_total", "name" => "api").increment(10500);
    metrics::counter!("rate_limiter_rejected_total", "name" => "api").increment(42);
    metrics::gauge!("bulkhead_active_requests", "name" => "tools").set(3.0);
    metrics::gauge!("bulkhead_queue_size", "name" => "tools").set(0.0);
    metrics::counter!("bulkhead_rejected_total", "name" => "tools").increment(0);
    metrics::counter!("agent_requests_total").increment(100);
    metrics::counter!("agent_requests_failed_total").increment(2);

    let mut chat = ChatSpan::start("openai", "gpt-4o");
    chat.record_usage(120, 48);
    chat.finish();
    ToolSpan::start("search", None).finish();

    let app = Router::new()
        .route("/chat", get(|| async { "ok" }))
        .layer(HttpTraceLayer::new());
    app.oneshot(Request::get("/chat").body(Body::empty()).unwrap())
        .await
        .unwrap();
}

async fn scrape(router: Router) -> (String, String) {
    let response = router
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(response.status().is_success());
    let content_type = response.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn metrics_endpoint_serves_the_guide_names_with_their_types() {
    let (recorder, handle) = build_prometheus_recorder(&PrometheusConfig::default()).unwrap();
    {
        let _local = metrics::set_default_local_recorder(&recorder);
        describe_known_metrics();
        emit_guide_metrics().await;
    }
    let (content_type, text) = scrape(metrics_router(handle)).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"));

    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut kinds: HashMap<&str, &Value> = HashMap::new();
    for sample in &parsed.samples {
        kinds.insert(sample.metric.as_str(), &sample.value);
    }
    let kind = |name: &str| match kinds.get(name) {
        Some(Value::Counter(_)) => "counter",
        Some(Value::Gauge(_)) => "gauge",
        Some(Value::Histogram(_)) => "histogram",
        Some(Value::Summary(_)) => "summary",
        Some(Value::Untyped(_)) => "untyped",
        None => panic!("`{name}` missing from /metrics:\n{text}"),
    };
    for name in [
        "agent_tool_calls_total",
        "circuit_breaker_requests_total",
        "circuit_breaker_failures_total",
        "rate_limiter_requests_total",
        "rate_limiter_rejected_total",
        "bulkhead_rejected_total",
        "agent_requests_total",
        "agent_requests_failed_total",
    ] {
        assert_eq!(kind(name), "counter", "{name}");
    }
    for name in [
        "circuit_breaker_state",
        "bulkhead_active_requests",
        "bulkhead_queue_size",
    ] {
        assert_eq!(kind(name), "gauge", "{name}");
    }
    for name in [
        "agent_tool_latency_seconds",
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_client_token_usage",
        "http_server_request_duration_seconds",
    ] {
        assert_eq!(kind(name), "histogram", "{name}");
    }

    let search_success = parsed
        .samples
        .iter()
        .find(|s| {
            s.metric == "agent_tool_calls_total"
                && s.labels.get("tool") == Some("search")
                && s.labels.get("status") == Some("success")
        })
        .unwrap();
    assert!(matches!(search_success.value, Value::Counter(v) if v == 1250.0));

    // GenAI histograms use the conventions' boundaries.
    let tokens = parsed
        .samples
        .iter()
        .find(|s| {
            s.metric == "gen_ai_client_token_usage"
                && s.labels.get("gen_ai_token_type") == Some("input")
        })
        .unwrap();
    let Value::Histogram(buckets) = &tokens.value else {
        panic!()
    };
    let bounds: Vec<f64> = buckets
        .iter()
        .map(|b| b.less_than)
        .filter(|b| b.is_finite())
        .collect();
    assert_eq!(bounds, genai::semconv::TOKEN_USAGE_BUCKETS.to_vec());
    assert!(text.contains(r#"http_route="/chat""#), "{text}");

    promtool_check(&text);
}

/// Runs `promtool check metrics` on `text` when promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipping `promtool check metrics`: promtool is not available ({e})");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    // promtool prints lint findings (e.g. missing HELP) on stdout but only
    // fails on malformed input; both must be clean of errors.
    assert!(
        output.status.success(),
        "promtool rejected /metrics:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(start_paused = true)]
async fn installed_exporter_runs_upkeep_and_serves_its_router() {
    // The only test in this binary that installs the global recorder.
    let exporter = PrometheusExporter::install(&PrometheusConfig {
        upkeep_interval_ms: 1_000,
        ..PrometheusConfig::default()
    })
    .unwrap();
    metrics::histogram!("agent_tool_latency_seconds", "tool" => "calculator").record(0.05);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(exporter.upkeep().runs(), 3);

    let (_, text) = scrape(exporter.router()).await;
    assert!(
        text.contains(r#"agent_tool_latency_seconds_bucket{tool="calculator",le="0.05"} 1"#),
        "{text}"
    );
    assert!(matches!(
        PrometheusExporter::install(&PrometheusConfig::default()),
        Err(TracingError::Prometheus(_))
    ));
    exporter.upkeep().stop();
}
