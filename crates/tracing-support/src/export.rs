//! Span export accounting: what reached the collector and what was lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// Counters of the span export pipeline, shared with the exporter thread.
///
/// Every finished span ends in one of three counters (also emitted as
/// `otel_exported_spans_total{outcome}`): `exported`, `failed` (the export
/// call failed: collector down, timeout, rejection) or `dropped` (the
/// bounded queue was full, so the span was never queued). The first failure
/// of an outage and the first drop of an overload are each logged once at
/// `WARN`; the recovery is logged once at `INFO`.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    exported_spans: AtomicU64,
    failed_spans: AtomicU64,
    failed_batches: AtomicU64,
    dropped_spans: AtomicU64,
    /// Spans accepted into the queue and not yet through an export call.
    queued: AtomicU64,
    failing: AtomicBool,
    dropping: AtomicBool,
}

impl ExportStats {
    /// Spans the collector accepted.
    pub fn exported_spans(&self) -> u64 {
        self.inner.exported_spans.load(Ordering::Relaxed)
    }

    /// Spans lost because an export call failed (collector down, timeout, rejection).
    pub fn failed_spans(&self) -> u64 {
        self.inner.failed_spans.load(Ordering::Relaxed)
    }

    /// Export calls that failed.
    pub fn failed_batches(&self) -> u64 {
        self.inner.failed_batches.load(Ordering::Relaxed)
    }

    /// Spans dropped because the export queue was full.
    pub fn dropped_spans(&self) -> u64 {
        self.inner.dropped_spans.load(Ordering::Relaxed)
    }

    /// Spans waiting in the queue or in an export call right now.
    pub fn queued_spans(&self) -> u64 {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Whether the most recent export call failed.
    pub fn is_failing(&self) -> bool {
        self.inner.failing.load(Ordering::Relaxed)
    }

    /// Takes a queue slot if fewer than `capacity` spans are queued.
    fn try_enqueue(&self, capacity: u64) -> bool {
        self.inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < capacity).then_some(queued + 1)
            })
            .is_ok()
    }

    fn release(&self, spans: u64) {
        // Saturating: spans ended after shutdown never took a slot back.
        let _ = self
            .inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                Some(queued.saturating_sub(spans))
            });
        if self.queued_spans() == 0 {
            self.inner.dropping.store(false, Ordering::Relaxed);
        }
    }

    fn record_dropped(&self, capacity: u64) {
        self.inner.dropped_spans.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("otel_exported_spans_total", "outcome" => "dropped").increment(1);
        if !self.inner.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "agent_patterns_tracing_support::export",
                max_queue_size = capacity,
                "span export queue full; new spans are dropped (and counted) until it drains"
            );
        }
    }

    fn record_success(&self, spans: u64) {
        self.inner
            .exported_spans
            .fetch_add(spans, Ordering::Relaxed);
        metrics::counter!("otel_exported_spans_total", "outcome" => "exported").increment(spans);
        if self.inner.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                target: "agent_patterns_tracing_support::export",
                failed_spans = self.failed_spans(),
                "span export recovered"
            );
        }
    }

    fn record_failure(&self, spans: u64, error: &dyn std::fmt::Display) {
        self.inner.failed_spans.fetch_add(spans, Ordering::Relaxed);
        self.inner.failed_batches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("otel_exported_spans_total", "outcome" => "failed").increment(spans);
        if !self.inner.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "agent_patterns_tracing_support::export",
                error = %error,
                dropped_spans = spans,
                "span export failing; spans are dropped (and counted) until the collector is reachable"
            );
        }
    }
}

/// Wraps the OTLP exporter to count outcomes into [`ExportStats`].
///
/// A failed export is reported as success to the batch processor after it is
/// counted: the processor would otherwise log every failed batch, and it
/// never retries a batch anyway (the OTLP exporter already retried with
/// backoff inside its timeout).
#[derive(Debug)]
pub(crate) struct CountingExporter<E> {
    inner: E,
    stats: ExportStats,
}

impl<E> CountingExporter<E> {
    pub(crate) fn new(inner: E, stats: ExportStats) -> Self {
        Self { inner, stats }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        match self.inner.export(batch).await {
            Ok(()) => self.stats.record_success(spans),
            Err(error) => self.stats.record_failure(spans, &error),
        }
        self.stats.release(spans);
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Bounds the spans waiting for export and counts what it turns away.
///
/// The SDK's batch processor also bounds its queue, but only logs its drops;
/// this gate admits at most `capacity` spans that have not yet been through
/// an export call (released by [`CountingExporter`]), so with the inner
/// queue sized to `capacity` every drop happens, and is counted, here.
/// `on_end` is a compare-and-swap and a channel send: it never blocks.
#[derive(Debug)]
pub(crate) struct GatedProcessor<P> {
    inner: P,
    stats: ExportStats,
    capacity: u64,
}

impl<P> GatedProcessor<P> {
    pub(crate) fn new(inner: P, stats: ExportStats, capacity: usize) -> Self {
        Self {
            inner,
            stats,
            capacity: u64::try_from(capacity).unwrap_or(u64::MAX),
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for GatedProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.stats.try_enqueue(self.capacity) {
            self.inner.on_end(span);
        } else {
            self.stats.record_dropped(self.capacity);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;
    use std::sync::atomic::AtomicBool;

    #[derive(Debug, Default)]
    struct Flaky {
        fail: Arc<AtomicBool>,
    }

    impl SpanExporter for Flaky {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.fail.load(Ordering::Relaxed) {
                Err(OTelSdkError::InternalFailure("collector down".into()))
            } else {
                Ok(())
            }
        }
    }

    fn span() -> SpanData {
        use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "s".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: opentelemetry_sdk::trace::SpanEvents::default(),
            links: opentelemetry_sdk::trace::SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: opentelemetry::InstrumentationScope::default(),
        }
    }

    #[tokio::test]
    async fn failed_exports_are_counted_and_reported_as_handled() {
        let fail = Arc::new(AtomicBool::new(true));
        let stats = ExportStats::default();
        let exporter = CountingExporter::new(
            Flaky {
                fail: Arc::clone(&fail),
            },
            stats.clone(),
        );
        assert!(exporter.export(vec![span(), span()]).await.is_ok());
        assert!(exporter.export(vec![span()]).await.is_ok());
        assert_eq!((stats.failed_spans(), stats.failed_batches()), (3, 2));
        assert!(stats.is_failing());
        fail.store(false, Ordering::Relaxed);
        exporter.export(vec![span()]).await.unwrap();
        assert_eq!(stats.exported_spans(), 1);
        assert!(!stats.is_failing());
    }

    #[derive(Debug, Default)]
    struct Collect(std::sync::Mutex<Vec<SpanData>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _span: &mut Span, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts_until_an_export_releases_slots() {
        let stats = ExportStats::default();
        let gate = GatedProcessor::new(Collect::default(), stats.clone(), 2);
        for _ in 0..5 {
            gate.on_end(span());
        }
        assert_eq!(gate.inner.0.lock().unwrap().len(), 2);
        assert_eq!((stats.queued_spans(), stats.dropped_spans()), (2, 3));

        // An export (successful or not) frees the slots of its batch.
        let exporter = CountingExporter::new(Flaky::default(), stats.clone());
        exporter.export(vec![span(), span()]).await.unwrap();
        assert_eq!(stats.queued_spans(), 0);
        gate.on_end(span());
        assert_eq!(gate.inner.0.lock().unwrap().len(), 3);
        assert_eq!(stats.dropped_spans(), 3);
    }
}
