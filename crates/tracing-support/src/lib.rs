//! Observability for production AI agents: one request followed from the
//! load balancer through the agent, the LLM call and each tool call, in the
//! logs, the traces and the metrics alike.
//!
//! * **Setup** — [`init_tracing`] (the guide's one-liner) or
//!   [`TracingBuilder`]: JSON or text logs filtered by `RUST_LOG`, spans
//!   exported over OTLP/gRPC or OTLP/HTTP-protobuf with a parent-based ratio
//!   sampler and `service.*`/`deployment.*` resource attributes. The
//!   standard `OTEL_*` variables apply. Export is batched and bounded: an
//!   unreachable collector never blocks or slows a request; lost spans are
//!   counted ([`ExportStats`]) and logged once.
//! * **Logs join traces** — every line written inside a span carries that
//!   span's `trace_id` and `span_id`.
//! * **Propagation** — [`context_propagation`]: W3C `traceparent`,
//!   `tracestate` and `baggage` in and out of `http::HeaderMap`, and
//!   [`HttpTraceLayer`], a tower layer making each request's span a child of
//!   the caller's.
//! * **GenAI** — [`ChatSpan`] (`chat {model}`) and [`ToolSpan`]
//!   (`execute_tool {tool}`) with the `gen_ai.*` attributes and the
//!   `gen_ai_client_operation_duration_seconds` / `gen_ai_client_token_usage`
//!   histograms.
//! * **Prometheus** — [`PrometheusExporter`]: the recorder with buckets for
//!   every histogram, its upkeep task and the `/metrics` route.
//!
//! Library crates only emit through `tracing` and `metrics`; the functions
//! here that install something global ([`init_tracing`],
//! [`TracingBuilder::install`], [`PrometheusExporter::install`]) are for the
//! application's `main`.
//!
//! # Example
//!
//! A pipeline without export, used for one request that arrived with a
//! `traceparent` header:
//!
//! ```
//! use agent_patterns_tracing_support::context_propagation::*;
//! use agent_patterns_tracing_support::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (dispatch, guard) = TracingBuilder::new("production-agent")
//!     .ignore_environment()
//!     .log_format(LogFormat::Text)
//!     .build()?;
//! let _default = tracing::dispatcher::set_default(&dispatch);
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert(
//!     "traceparent",
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?,
//! );
//! let span_context = extract_trace_context(&headers);
//! let span = tracing::info_span!(
//!     "handle_request",
//!     trace_id = %span_context.trace_id,
//!     span_id = %span_context.span_id,
//! );
//! span_context.set_as_parent_of(&span)?;
//!
//! let _entered = span.enter();
//! let mut chat = ChatSpan::start("openai", "gpt-4o");
//! chat.record_usage(120, 48);
//! chat.finish();
//!
//! // Outgoing calls continue the same trace.
//! let outgoing = trace_headers();
//! let continued = extract_trace_context(&outgoing);
//! assert_eq!(continued.trace_id, span_context.trace_id);
//!
//! drop(_entered);
//! guard.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod config;
pub mod context_propagation;
mod error;
mod export;
mod filter;
pub mod genai;
mod http_layer;
mod init;
mod log_format;
pub mod prometheus;
#[cfg(feature = "shutdown")]
mod shutdown;

pub use config::{
    LogFormat, MAX_QUEUE_SIZE, OtlpConfig, OtlpProtocol, TracingConfig, parse_resource_attributes,
};
pub use context_propagation::{
    TraceContext, extract_trace_context, inject_current_context, inject_trace_context,
    trace_headers,
};
pub use error::TracingError;
pub use export::ExportStats;
pub use genai::{ChatSpan, ToolSpan};
pub use http_layer::{
    HTTP_SERVER_REQUEST_DURATION, HttpTraceFuture, HttpTraceLayer, HttpTraceService,
    TRACE_ID_HEADER,
};
pub use init::{TracingBuilder, TracingGuard, init_tracing, shutdown_tracing};
pub use log_format::{JsonLogFormat, TextLogFormat, current_trace_ids};
pub use prometheus::{
    PrometheusConfig, PrometheusExporter, build_prometheus_recorder, describe_known_metrics,
    metrics_router, prometheus_builder, spawn_upkeep,
};

/// The crate README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
