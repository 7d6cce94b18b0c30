//! Installing the subscriber and the OpenTelemetry pipeline.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing::Dispatch;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

use crate::TracingError;
use crate::config::{LogFormat, OtlpConfig, OtlpProtocol, TracingConfig};
use crate::export::{CountingExporter, ExportStats, GatedProcessor};
use crate::log_format::{JsonLogFormat, TextLogFormat};

/// The pipeline installed by [`init_tracing`] / [`TracingBuilder::install`],
/// kept so [`shutdown_tracing`] can flush it from anywhere.
static INSTALLED: OnceLock<TracingGuard> = OnceLock::new();

/// Target prefixes whose spans and events never reach the OpenTelemetry
/// layer: the export path itself (gRPC/HTTP client stacks and the SDK), so
/// exporting cannot produce spans that need exporting. Matching is by string
/// prefix, hence `tower::` (tower's buffer worker) rather than `tower`, which
/// would also hide `tower_http`.
const EXPORT_PATH_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "tonic",
    "tower::",
    "reqwest",
    "opentelemetry",
    "agent_patterns_tracing_support::export",
];

/// Sets up JSON logs, `RUST_LOG` filtering, W3C propagation and OTLP/gRPC
/// export of spans to `otlp_endpoint` for `service_name`, and installs them
/// globally.
///
/// The standard `OTEL_*` variables override these arguments (see
/// [`TracingConfig::with_env_from`]); use [`TracingBuilder`] for the other
/// settings. Start-up does not wait for the collector: an unreachable one
/// only means spans are dropped (and counted) while it is down.
///
/// # The guard
///
/// The tracer provider is also registered globally, so **dropping the
/// returned guard does not stop export**: the guide's statement form
/// `init_tracing(..).await?;` works as expected. Keep the guard (or call
/// [`shutdown_tracing`]) to flush the last spans at exit: call
/// [`TracingGuard::shutdown`] or register it with the shutdown coordinator.
///
/// # Errors
///
/// A [`TracingError::Config`] naming the bad argument or variable, or
/// [`TracingError::AlreadyInstalled`] when a global subscriber exists.
///
/// # Example
///
/// ```no_run
/// use agent_patterns_tracing_support::*;
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // Initialize tracing (includes OpenTelemetry)
///     init_tracing("production-agent", "http://jaeger:4317").await?;
///
///     tracing::info!("agent started");
///     // ... serve requests ...
///
///     // Send the spans still queued before the process exits.
///     shutdown_tracing().await?;
///     Ok(())
/// }
/// ```
pub async fn init_tracing(
    service_name: impl Into<String>,
    otlp_endpoint: impl Into<String>,
) -> Result<TracingGuard, TracingError> {
    TracingBuilder::new(service_name)
        .otlp(OtlpConfig::grpc(otlp_endpoint))
        .install()
}

/// Flushes and shuts down the pipeline installed by [`init_tracing`] or
/// [`TracingBuilder::install`]; a no-op when none is installed.
pub async fn shutdown_tracing() -> Result<(), TracingError> {
    match INSTALLED.get() {
        Some(guard) => guard.shutdown().await,
        None => Ok(()),
    }
}

/// Builds the tracing pipeline from a [`TracingConfig`].
///
/// ```no_run
/// use agent_patterns_tracing_support::*;
///
/// # async fn run() -> Result<(), TracingError> {
/// let guard = TracingBuilder::new("production-agent")
///     .service_version(env!("CARGO_PKG_VERSION"))
///     .deployment_environment("production")
///     .otlp(OtlpConfig::http("http://otel-collector:4318"))
///     .sampling_ratio(0.1)
///     .log_format(LogFormat::Json)
///     .install()?;
/// // ... run the service ...
/// guard.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TracingBuilder {
    config: TracingConfig,
    read_env: bool,
    writer: Option<WriterSlot>,
}

struct WriterSlot(BoxMakeWriter);

impl std::fmt::Debug for WriterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxMakeWriter")
    }
}

impl TracingBuilder {
    /// A builder for `service_name`: JSON logs at `info`, no export yet.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self::from_config(TracingConfig::new(service_name))
    }

    /// A builder starting from `config`.
    pub fn from_config(config: TracingConfig) -> Self {
        Self {
            config,
            read_env: true,
            writer: None,
        }
    }

    /// Exports spans over OTLP as configured.
    pub fn otlp(mut self, otlp: OtlpConfig) -> Self {
        self.config.otlp = Some(otlp);
        self
    }

    /// Exports spans over OTLP/gRPC to `endpoint`.
    pub fn otlp_endpoint(self, endpoint: impl Into<String>) -> Self {
        self.otlp(OtlpConfig::grpc(endpoint))
    }

    /// Writes logs only; spans still get ids (for logs and propagation).
    pub fn without_otlp(mut self) -> Self {
        self.config.otlp = None;
        self
    }

    /// JSON (production) or text (development) log lines.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.config.log_format = format;
        self
    }

    /// Filter directives used when `RUST_LOG` is unset, e.g. `info,my_agent=debug`.
    pub fn log_filter(mut self, directives: impl Into<String>) -> Self {
        self.config.log_filter = directives.into();
        self
    }

    /// Colour level names in text logs.
    pub fn ansi(mut self, ansi: bool) -> Self {
        self.config.ansi = ansi;
        self
    }

    /// Share of new traces recorded (`0.0..=1.0`).
    pub fn sampling_ratio(mut self, ratio: f64) -> Self {
        self.config.sampling_ratio = ratio;
        self
    }

    /// Follow the caller's sampling decision for continued traces (default `true`).
    pub fn parent_based_sampling(mut self, parent_based: bool) -> Self {
        self.config.parent_based_sampling = parent_based;
        self
    }

    /// `service.version` resource attribute.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.config.service_version = Some(version.into());
        self
    }

    /// `deployment.environment.name` resource attribute.
    pub fn deployment_environment(mut self, environment: impl Into<String>) -> Self {
        self.config.deployment_environment = Some(environment.into());
        self
    }

    /// A further resource attribute.
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config
            .resource_attributes
            .insert(key.into(), value.into());
        self
    }

    /// Ignore `OTEL_*` and `RUST_LOG` (use only what was configured in code).
    pub fn ignore_environment(mut self) -> Self {
        self.read_env = false;
        self
    }

    /// Write log lines to `writer` instead of stdout.
    pub fn log_writer<W>(mut self, writer: W) -> Self
    where
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        self.writer = Some(WriterSlot(BoxMakeWriter::new(writer)));
        self
    }

    /// The configuration as set so far (before the environment is applied).
    pub fn config(&self) -> &TracingConfig {
        &self.config
    }

    /// Builds the subscriber and the pipeline without installing anything
    /// globally: use the [`Dispatch`] with `tracing::dispatcher::set_default`
    /// (tests, or several pipelines in one process).
    ///
    /// gRPC export needs to be called within a Tokio runtime.
    pub fn build(self) -> Result<(Dispatch, TracingGuard), TracingError> {
        let config = if self.read_env {
            self.config.with_env()?
        } else {
            self.config
        };
        config.validate()?;

        let stats = ExportStats::default();
        let provider = build_provider(&config, &stats)?;
        let tracer = provider.tracer(config.service_name.clone());

        let env_filter = EnvFilter::builder()
            .parse(crate::filter::expand_facade_targets(&config.log_filter))
            .map_err(|e| TracingError::config("log_filter", e.to_string()))?;
        let otel_layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(export_path_filter())
            .boxed();

        let writer = self
            .writer
            .map_or_else(|| BoxMakeWriter::new(std::io::stdout), |slot| slot.0);
        let fmt_layer = match config.log_format {
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .event_format(JsonLogFormat)
                .fmt_fields(JsonFields::new())
                .with_ansi(false)
                .with_writer(writer)
                .boxed(),
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .event_format(TextLogFormat)
                .fmt_fields(DefaultFields::new())
                .with_ansi(config.ansi)
                .with_writer(writer)
                .boxed(),
        };

        let subscriber = Registry::default()
            .with(otel_layer)
            .with(fmt_layer)
            .with(env_filter);
        let export_timeout = config
            .otlp
            .as_ref()
            .map_or(Duration::from_secs(5), OtlpConfig::export_timeout);
        Ok((
            Dispatch::new(subscriber),
            TracingGuard {
                provider,
                stats,
                shutdown_timeout: export_timeout + Duration::from_secs(1),
            },
        ))
    }

    /// Builds the pipeline and installs it globally: the subscriber, the
    /// tracer provider and the W3C propagator. See [`init_tracing`] for
    /// what the returned guard does.
    ///
    /// Synchronous, but gRPC export needs to be called within a Tokio runtime.
    pub fn install(self) -> Result<TracingGuard, TracingError> {
        let (dispatch, guard) = self.build()?;
        tracing::dispatcher::set_global_default(dispatch)
            .map_err(|e| TracingError::AlreadyInstalled(e.to_string()))?;
        opentelemetry::global::set_text_map_propagator(crate::context_propagation::propagator());
        opentelemetry::global::set_tracer_provider(guard.provider.clone());
        // Only one global subscriber can ever be set, so this cannot be full.
        let _ = INSTALLED.set(guard.clone());
        Ok(guard)
    }
}

fn export_path_filter() -> Targets {
    EXPORT_PATH_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, target| targets.with_target(*target, LevelFilter::OFF),
    )
}

fn build_provider(
    config: &TracingConfig,
    stats: &ExportStats,
) -> Result<SdkTracerProvider, TracingError> {
    let mut resource = Resource::builder_empty().with_service_name(config.service_name.clone());
    if let Some(version) = &config.service_version {
        resource = resource.with_attribute(KeyValue::new("service.version", version.clone()));
    }
    if let Some(environment) = &config.deployment_environment {
        // Both the current name and the pre-1.27 one many dashboards still query.
        resource = resource.with_attributes([
            KeyValue::new("deployment.environment.name", environment.clone()),
            KeyValue::new("deployment.environment", environment.clone()),
        ]);
    }
    resource = resource.with_attributes(
        config
            .resource_attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );

    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_sampler(sampler(config.sampling_ratio, config.parent_based_sampling));
    if let Some(otlp) = &config.otlp {
        let exporter = CountingExporter::new(build_exporter(otlp)?, stats.clone());
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(otlp.max_queue_size)
            .with_max_export_batch_size(otlp.max_export_batch_size)
            .with_scheduled_delay(otlp.scheduled_delay())
            .build();
        let batch_processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        builder = builder.with_span_processor(GatedProcessor::new(
            batch_processor,
            stats.clone(),
            otlp.max_queue_size,
        ));
    }
    Ok(builder.build())
}

fn sampler(ratio: f64, parent_based: bool) -> Sampler {
    let root = if ratio >= 1.0 {
        Sampler::AlwaysOn
    } else if ratio <= 0.0 {
        Sampler::AlwaysOff
    } else {
        Sampler::TraceIdRatioBased(ratio)
    };
    if parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

fn build_exporter(otlp: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, TracingError> {
    let url = otlp.traces_url();
    let exporter_error = |reason: String| TracingError::Exporter {
        endpoint: url.clone(),
        reason,
    };
    match otlp.protocol {
        OtlpProtocol::Grpc => {
            // tonic connects lazily on the current runtime; without one it would panic.
            tokio::runtime::Handle::try_current().map_err(|_| {
                exporter_error("OTLP/gRPC export must be set up within a Tokio runtime".to_owned())
            })?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url.clone())
                .with_timeout(otlp.export_timeout())
                .build()
                .map_err(|e| exporter_error(e.to_string()))
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(otlp.export_timeout())
            .build()
            .map_err(|e| exporter_error(e.to_string())),
    }
}

/// Handle on a tracing pipeline: flushes and shuts down span export.
///
/// Cloning is cheap; all clones control the same pipeline. Dropping a guard
/// does **not** stop export (the installed provider is global), so the
/// guide's `init_tracing(..).await?;` keeps exporting. At exit call
/// [`TracingGuard::shutdown`] (or [`shutdown_tracing`]) so the spans still
/// queued are sent; with the `shutdown` feature the guard is a
/// `ShutdownHandler` for the coordinator.
#[derive(Debug, Clone)]
pub struct TracingGuard {
    provider: SdkTracerProvider,
    stats: ExportStats,
    shutdown_timeout: Duration,
}

impl TracingGuard {
    /// The OpenTelemetry tracer provider behind the pipeline.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Counters of exported and lost spans.
    pub fn export_stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Exports every span finished so far and waits for the collector.
    ///
    /// Runs the SDK's blocking flush on Tokio's blocking pool, so it is safe
    /// on a current-thread runtime. Bounded by the SDK's flush timeout.
    ///
    /// # Errors
    ///
    /// [`TracingError::ExportFailed`] when the collector did not accept some
    /// of the flushed spans, [`TracingError::Timeout`] when it did not answer
    /// in time.
    pub async fn flush(&self) -> Result<(), TracingError> {
        let provider = self.provider.clone();
        self.run_blocking("flush", move || provider.force_flush())
            .await
    }

    /// Exports what is queued, then stops the exporter. Idempotent: later
    /// calls (and spans ended afterwards) do nothing.
    ///
    /// # Errors
    ///
    /// As for [`TracingGuard::flush`].
    pub async fn shutdown(&self) -> Result<(), TracingError> {
        let provider = self.provider.clone();
        let timeout = self.shutdown_timeout;
        self.run_blocking("shutdown", move || provider.shutdown_with_timeout(timeout))
            .await
    }

    async fn run_blocking(
        &self,
        operation: &'static str,
        call: impl FnOnce() -> Result<(), OTelSdkError> + Send + 'static,
    ) -> Result<(), TracingError> {
        let failed_before = self.stats.failed_spans();
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(call)
                .await
                .map_err(|e| TracingError::Sdk {
                    operation,
                    reason: e.to_string(),
                })?,
            Err(_) => call(),
        };
        match result {
            Ok(()) | Err(OTelSdkError::AlreadyShutdown) => {}
            Err(OTelSdkError::Timeout(timeout)) => {
                return Err(TracingError::Timeout { operation, timeout });
            }
            Err(OTelSdkError::InternalFailure(reason)) => {
                return Err(TracingError::Sdk { operation, reason });
            }
        }
        match self.stats.failed_spans().saturating_sub(failed_before) {
            0 => Ok(()),
            failed_spans => Err(TracingError::ExportFailed { failed_spans }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_follows_ratio_and_parent_setting() {
        assert!(matches!(sampler(1.0, false), Sampler::AlwaysOn));
        assert!(matches!(sampler(0.0, false), Sampler::AlwaysOff));
        assert!(matches!(sampler(0.5, false), Sampler::TraceIdRatioBased(r) if r == 0.5));
        assert!(matches!(sampler(0.5, true), Sampler::ParentBased(_)));
    }

    #[test]
    fn export_path_never_reaches_the_trace_but_application_targets_do() {
        let filter = export_path_filter();
        let level = tracing::Level::ERROR;
        for hidden in [
            "h2::proto",
            "hyper_util::client",
            "tonic::transport",
            "tower::buffer::worker",
            "opentelemetry_sdk",
            "agent_patterns_tracing_support::export",
        ] {
            assert!(!filter.would_enable(hidden, &level), "{hidden}");
        }
        for shown in [
            "tower_http::trace",
            "production_agent",
            "agent_patterns_tracing_support::genai",
        ] {
            assert!(filter.would_enable(shown, &level), "{shown}");
        }
    }

    #[test]
    fn grpc_export_outside_a_runtime_is_an_error_not_a_panic() {
        let err = TracingBuilder::new("svc")
            .ignore_environment()
            .otlp_endpoint("http://127.0.0.1:4317")
            .build()
            .unwrap_err();
        assert!(matches!(err, TracingError::Exporter { .. }), "{err}");
    }

    #[test]
    fn invalid_endpoint_is_a_config_error() {
        let err = TracingBuilder::new("svc")
            .ignore_environment()
            .otlp_endpoint("jaeger:4317")
            .build()
            .unwrap_err();
        assert!(
            matches!(err, TracingError::Config { ref field, .. } if field == "otlp.endpoint"),
            "{err}"
        );
    }
}
