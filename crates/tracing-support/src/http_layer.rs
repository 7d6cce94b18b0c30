//! A tower layer that puts every HTTP request in a server span continuing
//! the caller's trace.
//!
//! For each request [`HttpTraceLayer`]:
//! 1. extracts the W3C context from the headers
//!    ([`extract_trace_context`](crate::context_propagation::extract_trace_context))
//!    and makes the request span (`{method} {route}`, kind server) its child;
//! 2. runs the inner service inside that span, so every log line and child
//!    span of the handler carries the same trace id;
//! 3. records `http.request.method`, `http.route`, `url.path`,
//!    `http.response.status_code` (and `error.type` for 5xx) on the span, and
//!    the latency in the `http_server_request_duration_seconds` histogram
//!    (`http.server.request.duration` in the HTTP semantic conventions);
//! 4. returns the trace id in a response header (`x-trace-id` by default),
//!    so a user reporting a problem can quote it.
//!
//! The route is axum's [`MatchedPath`] (`/users/{id}`, not `/users/42`), so
//! span names and metric labels stay low-cardinality; add the layer with
//! `Router::layer` so it is available.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use opentelemetry::trace::TraceContextExt as _;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::context_propagation::extract_trace_context;

/// Default response header carrying the trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Prometheus name of `http.server.request.duration`.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http_server_request_duration_seconds";

/// Layer producing [`HttpTraceService`]: each request runs in a server span
/// (`{method} {route}`) that continues the caller's W3C trace, records the
/// HTTP semantic-convention attributes and `http_server_request_duration_seconds`,
/// and returns the trace id in the `x-trace-id` response header.
///
/// Add it with axum's `Router::layer` so the matched route is known:
///
/// ```
/// use agent_patterns_tracing_support::HttpTraceLayer;
/// use axum::{Router, routing::get};
///
/// let app: Router = Router::new()
///     .route("/chat/{id}", get(|| async { "ok" }))
///     .layer(HttpTraceLayer::new());
/// ```
#[derive(Debug, Clone)]
pub struct HttpTraceLayer {
    trace_id_header: Option<HeaderName>,
}

impl Default for HttpTraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpTraceLayer {
    /// A layer returning the trace id in `x-trace-id`.
    pub fn new() -> Self {
        Self {
            trace_id_header: Some(HeaderName::from_static(TRACE_ID_HEADER)),
        }
    }

    /// Returns the trace id in `header` instead.
    pub fn trace_id_header(mut self, header: HeaderName) -> Self {
        self.trace_id_header = Some(header);
        self
    }

    /// Does not add a trace-id response header.
    pub fn without_trace_id_header(mut self) -> Self {
        self.trace_id_header = None;
        self
    }
}

impl<S> Layer<S> for HttpTraceLayer {
    type Service = HttpTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpTraceService {
            inner,
            trace_id_header: self.trace_id_header.clone(),
        }
    }
}

/// Service wrapping each request in a server span; see [`HttpTraceLayer`].
#[derive(Debug, Clone)]
pub struct HttpTraceService<S> {
    inner: S,
    trace_id_header: Option<HeaderName>,
}

/// The response future of [`HttpTraceService`].
pub type HttpTraceFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpTraceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HttpTraceFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let parent = extract_trace_context(request.headers());
        let method = semconv_method(request.method());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|path| path.as_str().to_owned());
        let name = match &route {
            Some(route) => format!("{method} {route}"),
            None => method.to_owned(),
        };
        let span = tracing::info_span!(
            "http_request",
            otel.name = %name,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method,
            http.route = route.as_deref(),
            url.path = %request.uri().path(),
            http.response.status_code = Empty,
            error.type = Empty,
        );
        // Fails only when no OpenTelemetry layer is installed; the span then
        // simply has no trace to join.
        let _ = parent.set_as_parent_of(&span);
        let otel_cx = span.context();
        let own = otel_cx.span().span_context().trace_id();
        let trace_id = if own == opentelemetry::trace::TraceId::INVALID {
            parent.trace_id
        } else {
            own
        };
        let header = self.trace_id_header.clone().and_then(|name| {
            HeaderValue::from_str(&trace_id.to_string())
                .ok()
                .map(|value| (name, value))
        });

        let future = span.in_scope(|| self.inner.call(request));
        let record_span = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                let status = match &result {
                    Ok(response) => Some(response.status().as_u16()),
                    Err(_) => None,
                };
                if let Some(status) = status {
                    // The OpenTelemetry layer exports only i64 fields as integers.
                    record_span.record("http.response.status_code", i64::from(status));
                }
                let error_type = match status {
                    Some(code) if code >= 500 => Some(code.to_string()),
                    Some(_) => None,
                    None => Some("_OTHER".to_owned()),
                };
                if let Some(error_type) = &error_type {
                    record_span.record("error.type", error_type.as_str());
                    record_span.record("otel.status_code", "ERROR");
                }
                metrics::histogram!(
                    HTTP_SERVER_REQUEST_DURATION,
                    "http_request_method" => method,
                    "http_route" => route.unwrap_or_default(),
                    "http_response_status_code" => status.map(|s| s.to_string()).unwrap_or_default(),
                )
                .record(started.elapsed().as_secs_f64());
                result.map(|mut response| {
                    if let Some((name, value)) = header {
                        response.headers_mut().insert(name, value);
                    }
                    response
                })
            }
            .instrument(span),
        )
    }
}

/// The method as the HTTP conventions name it: known methods as-is,
/// anything else `_OTHER` (bounded cardinality).
fn semconv_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn records_status_route_and_returns_the_callers_trace_id() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let app = Router::new()
            .route(
                "/fail/{id}",
                get(|| async { http::StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .layer(HttpTraceLayer::new());
        let request = Request::get("/fail/7")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 500);
        // Without an OpenTelemetry layer the caller's trace id is returned.
        assert_eq!(
            response.headers()[TRACE_ID_HEADER],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let snapshot = snapshotter.snapshot().into_vec();
        let (key, _, _, value) = snapshot
            .iter()
            .find(|(key, ..)| key.key().name() == HTTP_SERVER_REQUEST_DURATION)
            .unwrap();
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert!(labels.contains(&("http_route".into(), "/fail/{id}".into())));
        assert!(labels.contains(&("http_response_status_code".into(), "500".into())));
        assert!(labels.contains(&("http_request_method".into(), "GET".into())));
        assert!(matches!(value, DebugValue::Histogram(v) if v.len() == 1));
    }

    #[tokio::test]
    async fn header_can_be_renamed_or_left_out() {
        let app = Router::new().route("/", get(|| async { "ok" }));
        let renamed = app
            .clone()
            .layer(HttpTraceLayer::new().trace_id_header(HeaderName::from_static("trace-id")))
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(renamed.headers()["trace-id"].len(), 32);
        let without = app
            .layer(HttpTraceLayer::new().without_trace_id_header())
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(without.headers().get(TRACE_ID_HEADER).is_none());
    }

    #[test]
    fn unknown_methods_are_bounded() {
        assert_eq!(semconv_method(&Method::GET), "GET");
        assert_eq!(
            semconv_method(&Method::from_bytes(b"PURGE").unwrap()),
            "_OTHER"
        );
    }
}
