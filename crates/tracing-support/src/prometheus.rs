//! The Prometheus exporter: recorder with histogram buckets, upkeep task and
//! the `/metrics` route.
//!
//! `metrics-exporter-prometheus` renders a histogram as a summary unless
//! buckets are configured, and summaries cannot be aggregated across pods.
//! [`prometheus_builder`] therefore sets buckets for every histogram: the
//! GenAI conventions' boundaries for `gen_ai_client_operation_duration_seconds`
//! and `gen_ai_client_token_usage`, [`PrometheusConfig::seconds_buckets`] for
//! every other `*_seconds` metric (e.g. `agent_tool_latency_seconds`,
//! `http_server_request_duration_seconds`), and
//! [`PrometheusConfig::default_buckets`] for the rest.
//!
//! With `install_recorder` nobody drains the histograms' raw samples unless
//! upkeep runs; [`PrometheusExporter::install`] spawns that task.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use metrics_exporter_prometheus::Matcher;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::TracingError;
use crate::genai::semconv;

/// The exporter crate's own types, for callers who configure it further.
pub use metrics_exporter_prometheus::{
    BuildError, Matcher as BucketMatcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets for latencies in seconds: 5 ms to 2 minutes.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Buckets for histograms of other units (counts, sizes): 1-2.5-5 decades.
pub const DEFAULT_BUCKETS: [f64; 13] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Settings of the Prometheus exporter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    /// Address of the metrics listener (`0.0.0.0:9090` by default).
    pub listen_addr: SocketAddr,
    /// How often histogram samples are drained, in milliseconds.
    pub upkeep_interval_ms: u64,
    /// Buckets of every `*_seconds` histogram (GenAI ones excepted).
    pub seconds_buckets: Vec<f64>,
    /// Buckets of histograms matched by nothing else.
    pub default_buckets: Vec<f64>,
    /// Labels added to every metric (e.g. `service`).
    pub global_labels: BTreeMap<String, String>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            upkeep_interval_ms: 5_000,
            seconds_buckets: SECONDS_BUCKETS.to_vec(),
            default_buckets: DEFAULT_BUCKETS.to_vec(),
            global_labels: BTreeMap::new(),
        }
    }
}

impl PrometheusConfig {
    /// How often upkeep runs.
    pub fn upkeep_interval(&self) -> Duration {
        Duration::from_millis(self.upkeep_interval_ms)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), TracingError> {
        if self.upkeep_interval_ms == 0 {
            return Err(TracingError::config(
                "prometheus.upkeep_interval_ms",
                "must be greater than 0",
            ));
        }
        check_buckets("prometheus.seconds_buckets", &self.seconds_buckets)?;
        check_buckets("prometheus.default_buckets", &self.default_buckets)
    }
}

fn check_buckets(field: &str, buckets: &[f64]) -> Result<(), TracingError> {
    if buckets.is_empty() {
        return Err(TracingError::config(field, "must not be empty"));
    }
    if buckets.iter().any(|b| !b.is_finite()) {
        return Err(TracingError::config(field, "bounds must be finite"));
    }
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(TracingError::config(
            field,
            "bounds must be strictly increasing",
        ));
    }
    Ok(())
}

/// A `PrometheusBuilder` with buckets for every histogram (see the
/// [module docs](self)) and the global labels; no listener, no recorder yet.
pub fn prometheus_builder(config: &PrometheusConfig) -> Result<PrometheusBuilder, TracingError> {
    config.validate()?;
    let err = |e: metrics_exporter_prometheus::BuildError| TracingError::Prometheus(e.to_string());
    let mut builder = PrometheusBuilder::new()
        .set_buckets(&config.default_buckets)
        .map_err(err)?
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &config.seconds_buckets,
        )
        .map_err(err)?
        // Full matches win over suffix matches.
        .set_buckets_for_metric(
            Matcher::Full(semconv::CLIENT_OPERATION_DURATION.to_owned()),
            &semconv::OPERATION_DURATION_BUCKETS,
        )
        .map_err(err)?
        .set_buckets_for_metric(
            Matcher::Full(semconv::CLIENT_TOKEN_USAGE.to_owned()),
            &semconv::TOKEN_USAGE_BUCKETS,
        )
        .map_err(err)?;
    for (key, value) in &config.global_labels {
        builder = builder.add_global_label(key, value);
    }
    Ok(builder)
}

/// `# HELP` text (and units) for every metric the workspace emits: the
/// guide's agent, circuit-breaker, rate-limiter and bulkhead metrics, the
/// GenAI and HTTP histograms, and this crate's export counter.
///
/// Registers with the current recorder: [`PrometheusExporter::install`]
/// calls it; with a local recorder use
/// `metrics::with_local_recorder(&recorder, describe_known_metrics)`.
/// Describing a metric does not create it.
pub fn describe_known_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

    describe_counter!("agent_requests_total", "Agent requests handled.");
    describe_counter!("agent_requests_failed_total", "Agent requests that failed.");
    describe_counter!(
        "agent_tool_calls_total",
        "Tool calls by tool and status (success or failure)."
    );
    describe_histogram!(
        "agent_tool_latency_seconds",
        Unit::Seconds,
        "Tool call latency by tool."
    );
    describe_gauge!(
        "circuit_breaker_state",
        "1 for the circuit breaker's current state (closed, open, half_open), 0 for the others."
    );
    describe_counter!(
        "circuit_breaker_requests_total",
        "Calls that went through the circuit breaker."
    );
    describe_counter!(
        "circuit_breaker_failures_total",
        "Failed calls recorded by the circuit breaker."
    );
    describe_counter!(
        "rate_limiter_requests_total",
        "Requests checked by the rate limiter."
    );
    describe_counter!(
        "rate_limiter_rejected_total",
        "Requests rejected by the rate limiter."
    );
    describe_gauge!(
        "bulkhead_active_requests",
        "Calls running inside the bulkhead."
    );
    describe_gauge!(
        "bulkhead_queue_size",
        "Calls waiting for a bulkhead permit."
    );
    describe_counter!(
        "bulkhead_rejected_total",
        "Calls rejected by a full bulkhead."
    );
    describe_histogram!(
        semconv::CLIENT_OPERATION_DURATION,
        Unit::Seconds,
        "GenAI operation duration (gen_ai.client.operation.duration)."
    );
    describe_histogram!(
        semconv::CLIENT_TOKEN_USAGE,
        Unit::Count,
        "Tokens used per GenAI operation, by token type (gen_ai.client.token.usage)."
    );
    describe_histogram!(
        crate::HTTP_SERVER_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP server request duration (http.server.request.duration)."
    );
    describe_counter!(
        "otel_exported_spans_total",
        "Spans sent to the OTLP collector, by outcome (exported or failed)."
    );
}

/// Builds a recorder without installing it (for `metrics::with_local_recorder`
/// or a custom fan-out), with its render handle.
pub fn build_prometheus_recorder(
    config: &PrometheusConfig,
) -> Result<(PrometheusRecorder, PrometheusHandle), TracingError> {
    let recorder = prometheus_builder(config)?.build_recorder();
    let handle = recorder.handle();
    Ok((recorder, handle))
}

/// Runs `handle.run_upkeep()` every `interval` on the Tokio runtime.
///
/// Dropping the returned value leaves the task running for the life of the
/// runtime; [`Upkeep::stop`] ends it.
pub fn spawn_upkeep(handle: PrometheusHandle, interval: Duration) -> Upkeep {
    let runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&runs);
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            handle.run_upkeep();
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    Upkeep { runs, task }
}

/// The periodic upkeep task of a Prometheus recorder.
#[derive(Debug)]
pub struct Upkeep {
    runs: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Upkeep {
    /// How many times upkeep has run.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Stops the task.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// The installed Prometheus recorder, its upkeep task and its route.
#[derive(Debug)]
pub struct PrometheusExporter {
    handle: PrometheusHandle,
    upkeep: Upkeep,
    listen_addr: SocketAddr,
}

impl PrometheusExporter {
    /// Installs the recorder globally (the application's one `metrics`
    /// recorder) and spawns its upkeep task. Call within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// A config error naming the field, or [`TracingError::Prometheus`] when
    /// a global recorder is already installed.
    pub fn install(config: &PrometheusConfig) -> Result<Self, TracingError> {
        tokio::runtime::Handle::try_current().map_err(|_| {
            TracingError::Prometheus("the upkeep task needs a Tokio runtime".to_owned())
        })?;
        let handle = prometheus_builder(config)?
            .install_recorder()
            .map_err(|e| TracingError::Prometheus(e.to_string()))?;
        describe_known_metrics();
        let upkeep = spawn_upkeep(handle.clone(), config.upkeep_interval());
        Ok(Self {
            handle,
            upkeep,
            listen_addr: config.listen_addr,
        })
    }

    /// The handle whose [`render`](PrometheusHandle::render) produces the text format.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The upkeep task.
    pub fn upkeep(&self) -> &Upkeep {
        &self.upkeep
    }

    /// A router serving `GET /metrics`.
    pub fn router(&self) -> Router {
        metrics_router(self.handle.clone())
    }

    /// Serves `/metrics` on the configured address until the future is dropped.
    pub async fn serve(&self) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.listen_addr).await?;
        axum::serve(listener, self.router()).await
    }
}

/// A router serving `GET /metrics` from `handle` in the Prometheus text format.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], handle.render()) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_buckets_naming_the_field() {
        let mut config = PrometheusConfig {
            seconds_buckets: vec![0.1, 0.1],
            ..PrometheusConfig::default()
        };
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "prometheus.seconds_buckets")
        );
        config.seconds_buckets = vec![];
        assert!(config.validate().is_err());
        config.seconds_buckets = vec![f64::INFINITY];
        assert!(config.validate().is_err());
        config.seconds_buckets = SECONDS_BUCKETS.to_vec();
        config.upkeep_interval_ms = 0;
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "prometheus.upkeep_interval_ms")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn upkeep_runs_on_every_interval_until_stopped() {
        let (_recorder, handle) = build_prometheus_recorder(&PrometheusConfig::default()).unwrap();
        let upkeep = spawn_upkeep(handle, Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert_eq!(upkeep.runs(), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(upkeep.runs(), 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(upkeep.runs(), 3);
        upkeep.stop();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(upkeep.runs(), 3);
    }

    #[test]
    fn histograms_render_as_buckets_with_genai_boundaries() {
        let (recorder, handle) = build_prometheus_recorder(&PrometheusConfig::default()).unwrap();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!(semconv::CLIENT_OPERATION_DURATION).record(0.3);
            metrics::histogram!("agent_tool_latency_seconds", "tool" => "search").record(0.25);
            metrics::histogram!("queue_depth").record(3.0);
        });
        let text = handle.render();
        assert!(
            text.contains("gen_ai_client_operation_duration_seconds_bucket{le=\"0.32\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("agent_tool_latency_seconds_bucket{tool=\"search\",le=\"0.25\"} 1"),
            "{text}"
        );
        assert!(text.contains("queue_depth_bucket{le=\"5\"} 1"), "{text}");
        assert!(!text.contains("quantile"), "{text}");
    }
}
