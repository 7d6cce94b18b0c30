//! End-to-end: a request with a `traceparent` goes through the HTTP layer,
//! an LLM call and a tool call, and its spans arrive at an OTLP receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use agent_patterns_tracing_support::context_propagation::extract_trace_context;
use agent_patterns_tracing_support::*;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::{HttpReceiver, LogBuffer, Receiver};
use tower::ServiceExt as _;
use tracing::Instrument as _;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

async fn chat_handler() -> &'static str {
    let mut chat = ChatSpan::start("openai", "gpt-4o");
    {
        let _entered = chat.span().enter();
        // The outgoing LLM request carries our trace.
        let outgoing = trace_headers();
        let continued = extract_trace_context(&outgoing);
        assert_eq!(continued.trace_id.to_string(), TRACE_ID);
        tracing::info!(model = "gpt-4o", "calling the model");
    }
    chat.record_response_model("gpt-4o-2024-08-06");
    chat.record_usage(120, 48);
    chat.record_finish_reasons(&["tool_calls"]);
    chat.finish();

    let tool = ToolSpan::start("search", Some("call_1"));
    tool.finish();
    "ok"
}

fn app() -> Router {
    Router::new()
        .route("/chat/{id}", get(chat_handler))
        .layer(HttpTraceLayer::new())
}

fn request() -> Request<Body> {
    Request::get("/chat/42")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("tracestate", "vendor=abc")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn request_spans_reach_the_collector_as_children_of_the_caller() {
    let receiver = Receiver::start().await;
    let logs = LogBuffer::default();
    let (dispatch, guard) = TracingBuilder::new("test-agent")
        .ignore_environment()
        .service_version("1.2.3")
        .deployment_environment("test")
        .otlp(OtlpConfig::grpc(receiver.endpoint()))
        .log_writer(logs.clone())
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);

    let response = app().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[TRACE_ID_HEADER], TRACE_ID);

    guard.flush().await.unwrap();
    let spans = receiver.spans();
    assert!(
        spans.iter().all(|s| s.trace_id_hex() == TRACE_ID),
        "{spans:#?}"
    );
    assert!(
        spans
            .iter()
            .all(|s| s.service_name.as_deref() == Some("test-agent"))
    );

    let server = spans
        .iter()
        .find(|s| s.span.name == "GET /chat/{id}")
        .expect("server span");
    assert_eq!(server.parent_span_id_hex(), PARENT_ID);
    assert_eq!(server.span.kind, SpanKind::Server as i32);
    assert_eq!(
        server.str_attr("http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(server.str_attr("http.route").as_deref(), Some("/chat/{id}"));
    assert_eq!(
        server.int_attr("http.response.status_code"),
        Some(200),
        "{:?}",
        server.span.attributes
    );

    let chat = spans
        .iter()
        .find(|s| s.span.name == "chat gpt-4o")
        .expect("chat span");
    assert_eq!(chat.parent_span_id_hex(), server.span_id_hex());
    assert_eq!(chat.span.kind, SpanKind::Client as i32);
    assert_eq!(
        chat.str_attr("gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        chat.str_attr("gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        chat.str_attr("gen_ai.request.model").as_deref(),
        Some("gpt-4o")
    );
    assert_eq!(
        chat.str_attr("gen_ai.response.model").as_deref(),
        Some("gpt-4o-2024-08-06")
    );
    assert_eq!(chat.int_attr("gen_ai.usage.input_tokens"), Some(120));
    assert_eq!(chat.int_attr("gen_ai.usage.output_tokens"), Some(48));
    match chat.attr("gen_ai.response.finish_reasons") {
        Some(any_value::Value::ArrayValue(array)) => assert_eq!(array.values.len(), 1),
        other => panic!("finish reasons: {other:?}"),
    }
    assert!(chat.attr("gen_ai.input.messages").is_none());

    let tool = spans
        .iter()
        .find(|s| s.span.name == "execute_tool search")
        .expect("tool span");
    assert_eq!(tool.parent_span_id_hex(), server.span_id_hex());
    assert_eq!(tool.str_attr("gen_ai.tool.name").as_deref(), Some("search"));
    assert_eq!(
        tool.str_attr("gen_ai.tool.call.id").as_deref(),
        Some("call_1")
    );

    // The log line written inside the chat span joins the trace.
    let line = logs
        .contents()
        .lines()
        .find(|l| l.contains("calling the model"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .expect("log line");
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["span_id"], chat.span_id_hex());
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["model"], "gpt-4o");

    assert!(guard.export_stats().exported_spans() >= 3);
    guard.shutdown().await.unwrap();
}

#[tokio::test]
async fn callers_sampling_decision_is_followed() {
    let receiver = Receiver::start().await;
    let (dispatch, guard) = TracingBuilder::new("test-agent")
        .ignore_environment()
        .otlp(OtlpConfig::grpc(receiver.endpoint()))
        .log_writer(LogBuffer::default())
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);

    let unsampled = Request::get("/chat/1")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-00"))
        .body(Body::empty())
        .unwrap();
    let response = app().oneshot(unsampled).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The trace id is still returned, so the caller can correlate logs.
    assert_eq!(response.headers()[TRACE_ID_HEADER], TRACE_ID);
    guard.flush().await.unwrap();
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
    guard.shutdown().await.unwrap();
}

/// A stand-in LLM provider: its own HTTP layer continues the trace it is sent.
async fn start_fake_llm() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            axum::routing::post(|| async { "{}" }),
        )
        .layer(HttpTraceLayer::new());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn outgoing_llm_request_continues_the_trace_over_reqwest() {
    let receiver = Receiver::start().await;
    let (dispatch, guard) = TracingBuilder::new("test-agent")
        .ignore_environment()
        .otlp(OtlpConfig::grpc(receiver.endpoint()))
        .log_writer(LogBuffer::default())
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);
    let llm = start_fake_llm().await;

    let chat = ChatSpan::start("openai", "gpt-4o");
    let response = async {
        reqwest::Client::new()
            .post(format!("http://{llm}/v1/chat/completions"))
            .headers(trace_headers())
            .send()
            .await
            .unwrap()
    }
    .instrument(chat.span().clone())
    .await;
    assert!(response.status().is_success());
    let returned_trace_id = response.headers()[TRACE_ID_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    chat.finish();

    guard.flush().await.unwrap();
    let spans = receiver.spans();
    let chat = spans.iter().find(|s| s.span.name == "chat gpt-4o").unwrap();
    let provider = spans
        .iter()
        .find(|s| s.span.name == "POST /v1/chat/completions")
        .unwrap();
    assert_eq!(provider.trace_id_hex(), chat.trace_id_hex());
    assert_eq!(provider.parent_span_id_hex(), chat.span_id_hex());
    assert_eq!(returned_trace_id, chat.trace_id_hex());
    guard.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_keep_succeeding_when_the_collector_stops() {
    let mut receiver = Receiver::start().await;
    let logs = LogBuffer::default();
    let (dispatch, guard) = TracingBuilder::new("test-agent")
        .ignore_environment()
        .otlp(OtlpConfig {
            max_queue_size: 8,
            max_export_batch_size: 8,
            export_timeout_ms: 300,
            ..OtlpConfig::grpc(receiver.endpoint())
        })
        .log_writer(logs.clone())
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);

    let response = app().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    guard.flush().await.unwrap();
    assert!(!receiver.spans().is_empty());

    receiver.stop().await;
    let app = app();
    // Far more spans than the queue holds: the surplus is dropped, requests
    // are not delayed. The timeout only guards against a hang.
    for _ in 0..100 {
        let response = tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(request()))
            .await
            .expect("a request blocked on span export")
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let flushed = guard.flush().await;
    assert!(
        flushed.is_err(),
        "flush to a stopped collector reported success"
    );
    let _ = guard.shutdown().await;
    assert!(
        guard.export_stats().failed_spans() > 0
            || matches!(flushed, Err(TracingError::Timeout { .. }))
    );
}

#[tokio::test]
async fn http_protobuf_export_delivers_spans_with_the_blocking_client() {
    let receiver = HttpReceiver::start().await;
    let (dispatch, guard) = TracingBuilder::new("test-agent")
        .ignore_environment()
        .otlp(OtlpConfig::http(receiver.endpoint()))
        .log_writer(LogBuffer::default())
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);

    let response = app().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    guard.flush().await.unwrap();
    let spans = receiver.spans();
    let server = spans
        .iter()
        .find(|s| s.span.name == "GET /chat/{id}")
        .expect("server span");
    assert_eq!(server.trace_id_hex(), TRACE_ID);
    assert_eq!(server.parent_span_id_hex(), PARENT_ID);
    assert!(spans.iter().any(|s| s.span.name == "chat gpt-4o"));
    guard.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_protobuf_export_builds_and_survives_an_unreachable_collector() {
    // Nothing listens on this port: start-up must still succeed, and the
    // blocking HTTP client must not panic inside the runtime.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (dispatch, guard) = TracingBuilder::new("test-agent")
        .ignore_environment()
        .otlp(OtlpConfig {
            export_timeout_ms: 300,
            ..OtlpConfig::http(format!("http://{addr}"))
        })
        .log_writer(LogBuffer::default())
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);
    let response = app().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(guard.flush().await.is_err());
    assert!(guard.export_stats().failed_spans() >= 1);
    let _ = guard.shutdown().await;
}
