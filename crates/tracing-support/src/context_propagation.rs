//! W3C trace-context and baggage propagation over `http::HeaderMap`.
//!
//! Incoming: [`extract_trace_context`] reads `traceparent`, `tracestate` and
//! `baggage` from a request's headers. A missing, malformed or all-zero
//! `traceparent` is rejected and a new root identity is generated instead, so
//! a broken or hostile caller can never attach our spans to a bogus trace.
//!
//! Outgoing: [`inject_current_context`] (or [`inject_trace_context`]) writes
//! the current span's context into the headers of a request we send, e.g. to
//! the LLM provider, so the trace continues there. `reqwest` uses
//! `http::HeaderMap`, so the map can be passed to `RequestBuilder::headers`.
//!
//! ```
//! use agent_patterns_tracing_support::context_propagation::*;
//!
//! # async fn process_request() {}
//! # async fn handle(headers: http::HeaderMap) {
//! // Extract trace context from HTTP headers
//! let span_context = extract_trace_context(&headers);
//!
//! // Create span with parent context
//! let span = tracing::info_span!(
//!     "handle_request",
//!     trace_id = %span_context.trace_id,
//!     span_id = %span_context.span_id,
//! );
//! // Make it a child of the caller's span in the trace backend too.
//! let _ = span_context.set_as_parent_of(&span);
//!
//! // Execute with trace context
//! async move {
//!     // All nested spans inherit this context
//!     process_request().await
//! }
//! .instrument(span)
//! .await
//! # }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap()
//! #     .block_on(handle(http::HeaderMap::new()));
//! ```
//!
//! The header formats are parsed and written by OpenTelemetry's
//! `TraceContextPropagator` and `BaggagePropagator`; this module adds a
//! strict `traceparent` check in front of them and the `HeaderMap` adapters.

use std::fmt;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Re-exported so `span_context`-based code can `.instrument(span)` a future
/// with this module's glob import alone.
pub use tracing::Instrument;

/// Name of the W3C `traceparent` header.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Name of the W3C `tracestate` header.
pub const TRACESTATE_HEADER: &str = "tracestate";
/// Name of the W3C `baggage` header.
pub const BAGGAGE_HEADER: &str = "baggage";

/// Upper bound on the combined `tracestate` (and `baggage`) header values we
/// read; longer values are dropped rather than parsed.
pub const MAX_PROPAGATION_HEADER_BYTES: usize = 8192;

/// The trace identity of an incoming request.
///
/// `trace_id` and `span_id` display as W3C lowercase hex (32 and 16 digits),
/// ready for structured log fields:
///
/// ```
/// use agent_patterns_tracing_support::context_propagation::*;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(
///     "traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
/// );
/// let span_context = extract_trace_context(&headers);
/// assert!(span_context.is_remote);
/// assert_eq!(span_context.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(span_context.span_id.to_string(), "00f067aa0ba902b7");
/// let _span = tracing::info_span!(
///     "handle_request",
///     trace_id = %span_context.trace_id,
///     span_id = %span_context.span_id,
/// );
/// ```
#[derive(Clone, Debug)]
pub struct TraceContext {
    /// The trace this request belongs to: the caller's, or a new one.
    pub trace_id: TraceId,
    /// The caller's span (our parent) when `is_remote`; otherwise a freshly
    /// generated id naming this request's root.
    pub span_id: SpanId,
    /// The caller's sampling decision; `true` for a new root (the local
    /// sampler then decides).
    pub sampled: bool,
    /// `true` when a valid `traceparent` arrived and the trace continues.
    pub is_remote: bool,
    /// The caller's `tracestate`, carried unchanged.
    pub trace_state: TraceState,
    context: Context,
}

impl TraceContext {
    /// The OpenTelemetry context to use as a parent: the caller's span (when
    /// remote) plus any baggage.
    pub fn otel_context(&self) -> Context {
        self.context.clone()
    }

    /// The caller's baggage entries.
    pub fn baggage(&self) -> &Baggage {
        self.context.baggage()
    }

    /// The span context this identity describes.
    pub fn span_context(&self) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            self.trace_id,
            self.span_id,
            flags,
            self.is_remote,
            self.trace_state.clone(),
        )
    }

    /// The `traceparent` header value for this identity.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// Makes `span` a child of the caller's span (when remote) and carries
    /// the baggage. Must be called before the span is first entered.
    pub fn set_as_parent_of(
        &self,
        span: &tracing::Span,
    ) -> Result<(), tracing_opentelemetry::SetParentError> {
        span.set_parent(self.otel_context())
    }

    /// Writes this identity (and its baggage) into `headers`.
    pub fn inject_into(&self, headers: &mut HeaderMap) {
        let cx = if self.is_remote {
            self.context.clone()
        } else {
            self.context.with_remote_span_context(self.span_context())
        };
        inject_trace_context(&cx, headers);
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// The propagator used by this crate: W3C trace context plus W3C baggage.
pub fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

fn shared_propagator() -> &'static TextMapCompositePropagator {
    static PROPAGATOR: OnceLock<TextMapCompositePropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(propagator)
}

/// Reads the trace identity of an incoming request from its headers.
///
/// Never fails: when `traceparent` is missing, malformed (wrong lengths,
/// upper-case or non-hex digits, version `ff`, extra fields in version 00,
/// several `traceparent` headers) or all-zero, a new root identity is
/// generated and `is_remote` is `false`. `tracestate` and `baggage` are
/// carried (several headers are joined per RFC 9110), bounded by
/// [`MAX_PROPAGATION_HEADER_BYTES`].
pub fn extract_trace_context(headers: &HeaderMap) -> TraceContext {
    let carrier = NormalizedHeaders::from_headers(headers);
    let context = shared_propagator().extract_with_context(&Context::new(), &carrier);
    let remote = context.span().span_context().clone();
    if remote.is_valid() {
        return TraceContext {
            trace_id: remote.trace_id(),
            span_id: remote.span_id(),
            sampled: remote.is_sampled(),
            is_remote: true,
            trace_state: remote.trace_state().clone(),
            context,
        };
    }
    let ids = RandomIdGenerator::default();
    // The propagator may still have extracted baggage; keep it, drop any span.
    let baggage_only = Context::new().with_baggage(
        context
            .baggage()
            .iter()
            .map(|(k, (v, m))| {
                opentelemetry::baggage::KeyValueMetadata::new(k.clone(), v.clone(), m.clone())
            })
            .collect::<Vec<_>>(),
    );
    TraceContext {
        trace_id: ids.new_trace_id(),
        span_id: ids.new_span_id(),
        sampled: true,
        is_remote: false,
        trace_state: TraceState::NONE,
        context: baggage_only,
    }
}

/// Writes `cx`'s span context (if valid) and baggage into `headers`,
/// replacing any previous `traceparent`, `tracestate` and `baggage`.
pub fn inject_trace_context(cx: &Context, headers: &mut HeaderMap) {
    headers.remove(TRACEPARENT_HEADER);
    headers.remove(TRACESTATE_HEADER);
    headers.remove(BAGGAGE_HEADER);
    shared_propagator().inject_context(cx, &mut HeaderInjector(headers));
}

/// Writes the current `tracing` span's OpenTelemetry context into `headers`,
/// so an outgoing request (e.g. the LLM call) continues the current trace.
///
/// Without an OpenTelemetry layer in the subscriber this falls back to the
/// thread's current OpenTelemetry context, and writes nothing if that is empty.
pub fn inject_current_context(headers: &mut HeaderMap) {
    let from_span = tracing::Span::current().context();
    let cx = if from_span.span().span_context().is_valid() {
        from_span
    } else {
        Context::current()
    };
    inject_trace_context(&cx, headers);
}

/// Headers for an outgoing request carrying the current trace context:
/// `client.get(url).headers(trace_headers())` with reqwest.
pub fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    inject_current_context(&mut headers);
    headers
}

/// Reads propagation fields from an `http::HeaderMap`.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Writes propagation fields into an `http::HeaderMap`. Values that are not
/// valid header values are skipped.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The three propagation headers after the checks the propagators do not
/// make: one strict `traceparent`, joined and bounded `tracestate`/`baggage`.
struct NormalizedHeaders {
    traceparent: Option<String>,
    tracestate: Option<String>,
    baggage: Option<String>,
}

impl NormalizedHeaders {
    fn from_headers(headers: &HeaderMap) -> Self {
        let mut traceparents = headers.get_all(TRACEPARENT_HEADER).iter();
        let traceparent = match (traceparents.next(), traceparents.next()) {
            (Some(only), None) => only
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|v| is_valid_traceparent(v))
                .map(str::to_owned),
            _ => None,
        };
        let tracestate = traceparent
            .as_ref()
            .and_then(|_| join_bounded(headers, TRACESTATE_HEADER));
        Self {
            traceparent,
            tracestate,
            baggage: join_bounded(headers, BAGGAGE_HEADER),
        }
    }
}

impl Extractor for NormalizedHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT_HEADER => self.traceparent.as_deref(),
            TRACESTATE_HEADER => self.tracestate.as_deref(),
            BAGGAGE_HEADER => self.baggage.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::with_capacity(3);
        if self.traceparent.is_some() {
            keys.push(TRACEPARENT_HEADER);
        }
        if self.tracestate.is_some() {
            keys.push(TRACESTATE_HEADER);
        }
        if self.baggage.is_some() {
            keys.push(BAGGAGE_HEADER);
        }
        keys
    }
}

fn join_bounded(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut joined = String::new();
    for value in headers.get_all(name) {
        let value = value.to_str().ok()?.trim();
        if value.is_empty() {
            continue;
        }
        if joined.len() + value.len() + 1 > MAX_PROPAGATION_HEADER_BYTES {
            return None;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    (!joined.is_empty()).then_some(joined)
}

/// Whether `value` is a `traceparent` the W3C Trace Context spec accepts:
/// `version-traceid-parentid-flags`, lower-case hex of exactly 2, 32, 16 and
/// 2 digits, version not `ff`, trace id and parent id not all zero, and no
/// further fields for version `00` (later versions may append `-…`).
pub fn is_valid_traceparent(value: &str) -> bool {
    const LEN: usize = 55;
    let bytes = value.as_bytes();
    if bytes.len() < LEN {
        return false;
    }
    let is_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let not_zero = |s: &[u8]| s.iter().any(|b| *b != b'0');
    let (version, trace_id, parent_id, flags) =
        (&bytes[0..2], &bytes[3..35], &bytes[36..52], &bytes[53..55]);
    let dashes = bytes[2] == b'-' && bytes[35] == b'-' && bytes[52] == b'-';
    let fields_ok = dashes
        && is_hex(version)
        && version != b"ff"
        && is_hex(trace_id)
        && not_zero(trace_id)
        && is_hex(parent_id)
        && not_zero(parent_id)
        && is_hex(flags);
    let tail_ok = if version == b"00" {
        bytes.len() == LEN
    } else {
        bytes.len() == LEN || bytes[LEN] == b'-'
    };
    fields_ok && tail_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn valid_traceparent_continues_the_callers_trace() {
        let cx = extract_trace_context(&headers(&[
            ("traceparent", VALID),
            ("tracestate", "vendor=abc,other=1"),
            ("baggage", "user.tier=gold"),
        ]));
        assert!(cx.is_remote);
        assert!(cx.sampled);
        assert_eq!(cx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(cx.trace_state.get("vendor"), Some("abc"));
        assert_eq!(
            cx.baggage().get("user.tier").map(|v| v.as_str().to_owned()),
            Some("gold".to_owned())
        );
        assert_eq!(cx.traceparent(), VALID);
    }

    #[test]
    fn malformed_or_zero_traceparent_starts_a_new_root() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let cx = extract_trace_context(&headers(&[
                ("traceparent", bad),
                ("tracestate", "vendor=abc"),
            ]));
            assert!(!cx.is_remote, "accepted {bad:?}");
            assert_ne!(cx.trace_id, TraceId::INVALID);
            assert_ne!(cx.span_id, SpanId::INVALID);
            assert_eq!(cx.trace_state.header(), "", "tracestate kept for {bad:?}");
        }
    }

    #[test]
    fn new_roots_get_distinct_ids_and_keep_baggage() {
        let a = extract_trace_context(&headers(&[("baggage", "k=v")]));
        let b = extract_trace_context(&HeaderMap::new());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.trace_id.to_string().len(), 32);
        assert_eq!(a.span_id.to_string().len(), 16);
        assert_eq!(
            a.baggage().get("k").map(|v| v.as_str().to_owned()),
            Some("v".to_owned())
        );
    }

    #[test]
    fn future_versions_may_append_fields() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert!(is_valid_traceparent(v));
        assert!(extract_trace_context(&headers(&[("traceparent", v)])).is_remote);
    }

    #[test]
    fn two_traceparent_headers_are_rejected() {
        let cx = extract_trace_context(&headers(&[("traceparent", VALID), ("traceparent", VALID)]));
        assert!(!cx.is_remote);
    }

    #[test]
    fn several_tracestate_headers_are_joined() {
        let cx = extract_trace_context(&headers(&[
            ("traceparent", VALID),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ]));
        assert_eq!(cx.trace_state.get("a"), Some("1"));
        assert_eq!(cx.trace_state.get("b"), Some("2"));
    }

    #[test]
    fn oversized_baggage_is_dropped() {
        let big = format!("k={}", "v".repeat(MAX_PROPAGATION_HEADER_BYTES));
        let cx = extract_trace_context(&headers(&[("traceparent", VALID), ("baggage", &big)]));
        assert!(cx.is_remote);
        assert!(cx.baggage().is_empty());
    }

    #[test]
    fn inject_writes_the_identity_and_replaces_stale_headers() {
        let cx = extract_trace_context(&headers(&[
            ("traceparent", VALID),
            ("tracestate", "vendor=abc"),
            ("baggage", "k=v"),
        ]));
        let mut out = headers(&[("traceparent", "stale"), ("baggage", "old=1")]);
        cx.inject_into(&mut out);
        assert_eq!(out.get_all("traceparent").iter().count(), 1);
        assert_eq!(out["traceparent"], VALID);
        assert_eq!(out["tracestate"], "vendor=abc");
        assert_eq!(out["baggage"], "k=v");
    }

    #[test]
    fn new_root_injects_its_own_identity() {
        let cx = extract_trace_context(&HeaderMap::new());
        let mut out = HeaderMap::new();
        cx.inject_into(&mut out);
        let back = extract_trace_context(&out);
        assert_eq!((back.trace_id, back.span_id), (cx.trace_id, cx.span_id));
    }

    proptest! {
        #[test]
        fn extraction_never_panics_on_any_header_bytes(
            tp in proptest::collection::vec(any::<u8>(), 0..80),
            ts in proptest::collection::vec(any::<u8>(), 0..80),
            bg in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut map = HeaderMap::new();
            for (name, bytes) in [("traceparent", &tp), ("tracestate", &ts), ("baggage", &bg)] {
                if let Ok(value) = HeaderValue::from_bytes(bytes) {
                    map.insert(name, value);
                }
            }
            let cx = extract_trace_context(&map);
            prop_assert!(cx.trace_id != TraceId::INVALID);
            prop_assert!(cx.span_id != SpanId::INVALID);
        }

        #[test]
        fn extraction_never_panics_on_near_valid_traceparents(s in "[0-9a-fA-F-]{50,60}") {
            let mut map = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&s) {
                map.insert("traceparent", value);
            }
            let cx = extract_trace_context(&map);
            prop_assert_eq!(cx.is_remote, is_valid_traceparent(&s));
        }

        #[test]
        fn inject_then_extract_round_trips(
            trace in 1u128..,
            span in 1u64..,
            sampled in any::<bool>(),
            key in "[a-z][a-z0-9_]{0,10}",
            value in "[a-zA-Z0-9]{1,10}",
        ) {
            let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
            let sc = SpanContext::new(
                TraceId::from(trace), SpanId::from(span), flags, true, TraceState::NONE,
            );
            let cx = Context::new()
                .with_remote_span_context(sc)
                .with_baggage(vec![opentelemetry::KeyValue::new(key.clone(), value.clone())]);
            let mut map = HeaderMap::new();
            inject_trace_context(&cx, &mut map);
            let back = extract_trace_context(&map);
            prop_assert!(back.is_remote);
            prop_assert_eq!(back.trace_id, TraceId::from(trace));
            prop_assert_eq!(back.span_id, SpanId::from(span));
            prop_assert_eq!(back.sampled, sampled);
            prop_assert_eq!(
                back.baggage().get(key.as_str()).map(|v| v.as_str().to_owned()),
                Some(value)
            );
        }
    }
}
