//! Configuration of the tracing pipeline, and how the standard `OTEL_*`
//! environment variables change it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::TracingError;

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers (production).
    #[default]
    Json,
    /// Human-readable single lines, for a terminal (development).
    Text,
}

/// The OTLP transport used to send spans to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (tonic), conventionally on port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies, conventionally on port 4318.
    ///
    /// Sent with a blocking HTTP client from the batch processor's own
    /// thread, so it never needs (or blocks) the async runtime.
    HttpProtobuf,
}

/// Upper bound of [`OtlpConfig::max_queue_size`]: the queue's slots are
/// allocated up front, so this keeps a typo from reserving gigabytes.
pub const MAX_QUEUE_SIZE: usize = 100_000;

/// Where and how spans are exported over OTLP.
///
/// Export is always batched: finished spans go into a bounded queue
/// (`max_queue_size`) that a background thread drains every
/// `scheduled_delay_ms` or whenever `max_export_batch_size` spans are waiting.
/// When the collector is slow or down the queue fills and new spans are
/// dropped (counted, and logged once) instead of slowing requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OtlpConfig {
    /// Base URL of the collector, e.g. `http://jaeger:4317`. For
    /// [`OtlpProtocol::HttpProtobuf`] the path `/v1/traces` is appended.
    pub endpoint: String,
    /// Full URL for traces, used as-is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    /// Takes precedence over `endpoint`.
    pub traces_endpoint: Option<String>,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Upper bound of one export call, in milliseconds.
    pub export_timeout_ms: u64,
    /// Maximum number of finished spans waiting for export.
    pub max_queue_size: usize,
    /// Maximum number of spans sent in one export call.
    pub max_export_batch_size: usize,
    /// Delay between two scheduled exports, in milliseconds.
    pub scheduled_delay_ms: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://localhost:4317".to_owned(),
            traces_endpoint: None,
            protocol: OtlpProtocol::Grpc,
            export_timeout_ms: 10_000,
            max_queue_size: 2_048,
            max_export_batch_size: 512,
            scheduled_delay_ms: 5_000,
        }
    }
}

impl OtlpConfig {
    /// An OTLP/gRPC config for `endpoint` with default bounds.
    pub fn grpc(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            ..Self::default()
        }
    }

    /// An OTLP/HTTP-protobuf config for the base URL `endpoint` with default bounds.
    pub fn http(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol: OtlpProtocol::HttpProtobuf,
            ..Self::default()
        }
    }

    /// The URL spans are sent to: `traces_endpoint` as-is, otherwise
    /// `endpoint` (plus `/v1/traces` for HTTP).
    pub fn traces_url(&self) -> String {
        if let Some(url) = &self.traces_endpoint {
            return url.clone();
        }
        match self.protocol {
            OtlpProtocol::Grpc => self.endpoint.clone(),
            OtlpProtocol::HttpProtobuf => {
                let base = self.endpoint.trim_end_matches('/');
                if base.ends_with("/v1/traces") {
                    base.to_owned()
                } else {
                    format!("{base}/v1/traces")
                }
            }
        }
    }

    /// Upper bound of one export call.
    pub fn export_timeout(&self) -> Duration {
        Duration::from_millis(self.export_timeout_ms)
    }

    /// Delay between two scheduled exports.
    pub fn scheduled_delay(&self) -> Duration {
        Duration::from_millis(self.scheduled_delay_ms)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), TracingError> {
        let url = self.traces_url();
        validate_url(&url).map_err(|reason| {
            let field = if self.traces_endpoint.is_some() {
                "otlp.traces_endpoint"
            } else {
                "otlp.endpoint"
            };
            TracingError::config(field, format!("`{url}`: {reason}"))
        })?;
        if self.export_timeout_ms == 0 {
            return Err(TracingError::config(
                "otlp.export_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.scheduled_delay_ms == 0 {
            return Err(TracingError::config(
                "otlp.scheduled_delay_ms",
                "must be greater than 0",
            ));
        }
        if self.max_queue_size == 0 || self.max_queue_size > MAX_QUEUE_SIZE {
            return Err(TracingError::config(
                "otlp.max_queue_size",
                format!(
                    "must be between 1 and {MAX_QUEUE_SIZE}, got {}",
                    self.max_queue_size
                ),
            ));
        }
        if self.max_export_batch_size == 0 || self.max_export_batch_size > self.max_queue_size {
            return Err(TracingError::config(
                "otlp.max_export_batch_size",
                format!(
                    "must be between 1 and max_queue_size ({}), got {}",
                    self.max_queue_size, self.max_export_batch_size
                ),
            ));
        }
        Ok(())
    }
}

fn validate_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        // No TLS stack is compiled in (it would need a C/asm crypto build);
        // in-cluster collectors and sidecars are reached over plain HTTP/2.
        Some("https") => {
            return Err(
                "https is not supported by this build; use an http:// collector \
                 (e.g. an OpenTelemetry Collector sidecar that forwards over TLS)"
                    .to_owned(),
            );
        }
        Some(other) => return Err(format!("scheme must be http, got `{other}`")),
        None => return Err("missing scheme (expected http://)".to_owned()),
    }
    if uri.authority().is_none() {
        return Err("missing host".to_owned());
    }
    Ok(())
}

/// Everything [`TracingBuilder`](crate::TracingBuilder) needs to set up logs and traces.
///
/// Deserialises from any serde format (all fields optional); validate with
/// [`TracingConfig::validate`]. The standard `OTEL_*` variables and
/// `RUST_LOG` are applied by [`TracingConfig::with_env`]: values from the
/// deployment's environment win over values written in code, so operators
/// can redirect or tune export without a rebuild.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TracingConfig {
    /// `service.name` resource attribute.
    pub service_name: String,
    /// `service.version` resource attribute, if any.
    pub service_version: Option<String>,
    /// `deployment.environment.name` (and the older `deployment.environment`)
    /// resource attribute, if any.
    pub deployment_environment: Option<String>,
    /// Further resource attributes.
    pub resource_attributes: BTreeMap<String, String>,
    /// OTLP export; `None` writes logs only.
    pub otlp: Option<OtlpConfig>,
    /// Log line format.
    pub log_format: LogFormat,
    /// `EnvFilter` directives used when `RUST_LOG` is not set, e.g. `info`.
    /// Here and in `RUST_LOG`, the facade's name stands for the crates it
    /// re-exports: `composable_rust_agent_patterns=debug` enables every
    /// `agent_patterns_*` crate's events, `composable_rust_agent_patterns::audit`
    /// those of `agent_patterns_audit`. (Audit events written through the
    /// tracing sink have the target `audit`: filter them by that name.)
    pub log_filter: String,
    /// Colour level names in [`LogFormat::Text`] output.
    pub ansi: bool,
    /// Share of new traces recorded, in `0.0..=1.0`.
    pub sampling_ratio: f64,
    /// Follow the caller's sampling decision when a request continues a trace
    /// (`ParentBased` sampler); the ratio then applies to new traces only.
    pub parent_based_sampling: bool,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            service_name: "unknown_service".to_owned(),
            service_version: None,
            deployment_environment: None,
            resource_attributes: BTreeMap::new(),
            otlp: None,
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            ansi: false,
            sampling_ratio: 1.0,
            parent_based_sampling: true,
        }
    }
}

impl TracingConfig {
    /// A config for `service_name` with defaults for the rest.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            ..Self::default()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), TracingError> {
        if self.service_name.trim().is_empty() {
            return Err(TracingError::config("service_name", "must not be empty"));
        }
        if !self.sampling_ratio.is_finite() || !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(TracingError::config(
                "sampling_ratio",
                format!("must be within 0.0..=1.0, got {}", self.sampling_ratio),
            ));
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(&self.log_filter)
            .map_err(|e| TracingError::config("log_filter", e.to_string()))?;
        if let Some(otlp) = &self.otlp {
            otlp.validate()?;
        }
        Ok(())
    }

    /// Applies the process environment: see [`TracingConfig::with_env_from`].
    pub fn with_env(self) -> Result<Self, TracingError> {
        self.with_env_from(|name| std::env::var(name).ok())
    }

    /// Applies environment variables read through `lookup`:
    ///
    /// | variable | effect |
    /// | --- | --- |
    /// | `OTEL_SERVICE_NAME` | `service_name` (wins over `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) |
    /// | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,...` (percent-decoded) merged into the resource |
    /// | `OTEL_EXPORTER_OTLP_ENDPOINT` | base endpoint; enables export |
    /// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | full traces URL; enables export |
    /// | `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` | `grpc` or `http/protobuf` |
    /// | `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` | export timeout in milliseconds |
    /// | `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY` | batch bounds |
    /// | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | sampler and ratio |
    /// | `OTEL_TRACES_EXPORTER=none`, `OTEL_SDK_DISABLED=true` | no export |
    /// | `RUST_LOG` | log filter directives |
    ///
    /// An unparsable value is an error naming the variable, never silently ignored.
    pub fn with_env_from(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TracingError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        if let Some(attrs) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for (key, value) in parse_resource_attributes(&attrs)? {
                match key.as_str() {
                    "service.name" => self.service_name = value,
                    "service.version" => self.service_version = Some(value),
                    "deployment.environment" | "deployment.environment.name" => {
                        self.deployment_environment = Some(value);
                    }
                    _ => {
                        self.resource_attributes.insert(key, value);
                    }
                }
            }
        }
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            self.service_name = name;
        }

        if let Some(endpoint) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let otlp = self.otlp.get_or_insert_with(OtlpConfig::default);
            otlp.endpoint = endpoint.trim().to_owned();
        }
        if let Some(endpoint) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            let otlp = self.otlp.get_or_insert_with(OtlpConfig::default);
            otlp.traces_endpoint = Some(endpoint.trim().to_owned());
        }
        for var in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            if let (Some(value), Some(otlp)) = (get(var), self.otlp.as_mut()) {
                otlp.protocol = match value.trim() {
                    "grpc" => OtlpProtocol::Grpc,
                    "http/protobuf" => OtlpProtocol::HttpProtobuf,
                    other => {
                        return Err(TracingError::config(
                            var,
                            format!("expected `grpc` or `http/protobuf`, got `{other}`"),
                        ));
                    }
                };
            }
        }
        if let Some(otlp) = self.otlp.as_mut() {
            for var in [
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            ] {
                if let Some(value) = get(var) {
                    otlp.export_timeout_ms = parse_number(var, &value)?;
                }
            }
            if let Some(value) = get("OTEL_BSP_MAX_QUEUE_SIZE") {
                otlp.max_queue_size = parse_number("OTEL_BSP_MAX_QUEUE_SIZE", &value)?;
            }
            if let Some(value) = get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
                otlp.max_export_batch_size =
                    parse_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &value)?;
            }
            if let Some(value) = get("OTEL_BSP_SCHEDULE_DELAY") {
                otlp.scheduled_delay_ms = parse_number("OTEL_BSP_SCHEDULE_DELAY", &value)?;
            }
        }
        if get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
            || get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            self.otlp = None;
        }

        if let Some(sampler) = get("OTEL_TRACES_SAMPLER") {
            let arg = match get("OTEL_TRACES_SAMPLER_ARG") {
                Some(raw) => Some(raw.trim().parse::<f64>().map_err(|e| {
                    TracingError::config("OTEL_TRACES_SAMPLER_ARG", format!("`{raw}`: {e}"))
                })?),
                None => None,
            };
            let (ratio, parent_based) = match sampler.trim() {
                "always_on" => (1.0, false),
                "always_off" => (0.0, false),
                "traceidratio" => (arg.unwrap_or(1.0), false),
                "parentbased_always_on" => (1.0, true),
                "parentbased_always_off" => (0.0, true),
                "parentbased_traceidratio" => (arg.unwrap_or(1.0), true),
                other => {
                    return Err(TracingError::config(
                        "OTEL_TRACES_SAMPLER",
                        format!(
                            "unsupported sampler `{other}` (expected always_on, always_off, \
                             traceidratio or their parentbased_ forms)"
                        ),
                    ));
                }
            };
            if !ratio.is_finite() || !(0.0..=1.0).contains(&ratio) {
                return Err(TracingError::config(
                    "OTEL_TRACES_SAMPLER_ARG",
                    format!("must be within 0.0..=1.0, got {ratio}"),
                ));
            }
            self.sampling_ratio = ratio;
            self.parent_based_sampling = parent_based;
        }

        if let Some(filter) = get("RUST_LOG") {
            tracing_subscriber::EnvFilter::builder()
                .parse(&filter)
                .map_err(|e| TracingError::config("RUST_LOG", e.to_string()))?;
            self.log_filter = filter;
        }
        Ok(self)
    }
}

fn parse_number<T: std::str::FromStr>(var: &str, raw: &str) -> Result<T, TracingError>
where
    T::Err: std::fmt::Display,
{
    raw.trim()
        .parse::<T>()
        .map_err(|e| TracingError::config(var, format!("`{raw}`: {e}")))
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: comma-separated `key=value` pairs,
/// percent-decoded. A pair without `=` or with an empty key is an error.
pub fn parse_resource_attributes(raw: &str) -> Result<Vec<(String, String)>, TracingError> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(TracingError::config(
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("`{pair}` is not key=value"),
            ));
        };
        let key = decode(key.trim())?;
        if key.is_empty() {
            return Err(TracingError::config(
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("`{pair}` has an empty key"),
            ));
        }
        out.push((key, decode(value.trim())?));
    }
    Ok(out)
}

fn decode(raw: &str) -> Result<String, TracingError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|e| TracingError::config("OTEL_RESOURCE_ATTRIBUTES", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn default_config_is_valid_and_exports_nothing() {
        let config = TracingConfig::default();
        assert!(config.validate().is_ok());
        assert!(config.otlp.is_none());
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let mut config = TracingConfig::new("");
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "service_name")
        );
        config.service_name = "svc".into();
        config.sampling_ratio = 1.5;
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "sampling_ratio")
        );
        config.sampling_ratio = f64::NAN;
        assert!(config.validate().is_err());
        config.sampling_ratio = 0.5;
        config.log_filter = "foo=notalevel".into();
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "log_filter")
        );
        config.log_filter = "info".into();
        config.otlp = Some(OtlpConfig::grpc("jaeger:4317"));
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "otlp.endpoint")
        );
        config.otlp = Some(OtlpConfig {
            max_queue_size: 0,
            ..OtlpConfig::grpc("http://jaeger:4317")
        });
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "otlp.max_queue_size")
        );
        config.otlp = Some(OtlpConfig {
            max_queue_size: MAX_QUEUE_SIZE + 1,
            ..OtlpConfig::grpc("http://jaeger:4317")
        });
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "otlp.max_queue_size")
        );
        config.otlp = Some(OtlpConfig {
            max_queue_size: 10,
            max_export_batch_size: 11,
            ..OtlpConfig::grpc("http://jaeger:4317")
        });
        assert!(
            matches!(config.validate(), Err(TracingError::Config { field, .. }) if field == "otlp.max_export_batch_size")
        );
    }

    #[test]
    fn http_endpoint_gets_the_traces_path_once() {
        assert_eq!(
            OtlpConfig::http("http://collector:4318").traces_url(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            OtlpConfig::http("http://collector:4318/v1/traces/").traces_url(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            OtlpConfig::grpc("http://collector:4317").traces_url(),
            "http://collector:4317"
        );
        let explicit = OtlpConfig {
            traces_endpoint: Some("http://x:1/custom".into()),
            ..OtlpConfig::http("http://collector:4318")
        };
        assert_eq!(explicit.traces_url(), "http://x:1/custom");
    }

    #[test]
    fn otel_environment_variables_override_code() {
        let config = TracingConfig::new("from-code")
            .with_env_from(env(&[
                ("OTEL_SERVICE_NAME", "from-env"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.name=ignored,service.version=1.2.3,deployment.environment=prod,team=a%20b",
                ),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
                ("RUST_LOG", "debug"),
            ]))
            .unwrap();
        assert_eq!(config.service_name, "from-env");
        assert_eq!(config.service_version.as_deref(), Some("1.2.3"));
        assert_eq!(config.deployment_environment.as_deref(), Some("prod"));
        assert_eq!(
            config.resource_attributes.get("team").map(String::as_str),
            Some("a b")
        );
        let otlp = config.otlp.as_ref().unwrap();
        assert_eq!(otlp.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(otlp.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!((otlp.max_queue_size, otlp.max_export_batch_size), (100, 10));
        assert_eq!(config.sampling_ratio, 0.25);
        assert!(config.parent_based_sampling);
        assert_eq!(config.log_filter, "debug");
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        for (var, value) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("RUST_LOG", "x=loud"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-1"),
        ] {
            let err = TracingConfig::new("svc")
                .with_env_from(env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    (var, value),
                ]))
                .unwrap_err();
            assert!(
                matches!(&err, TracingError::Config { field, .. } if field == var),
                "{err}"
            );
        }
        let err = TracingConfig::new("svc")
            .with_env_from(env(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ]))
            .unwrap_err();
        assert!(
            matches!(&err, TracingError::Config { field, .. } if field == "OTEL_TRACES_SAMPLER_ARG")
        );
    }

    #[test]
    fn sdk_disabled_turns_export_off() {
        let config = TracingConfig {
            otlp: Some(OtlpConfig::default()),
            ..TracingConfig::new("svc")
        }
        .with_env_from(env(&[("OTEL_SDK_DISABLED", "true")]))
        .unwrap();
        assert!(config.otlp.is_none());
    }

    #[test]
    fn config_round_trips_through_serde() {
        let config = TracingConfig {
            otlp: Some(OtlpConfig::http("http://c:4318")),
            log_format: LogFormat::Text,
            ..TracingConfig::new("svc")
        };
        let json = serde_json::to_string(&config).unwrap();
        let back: TracingConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let partial: TracingConfig = serde_json::from_str(r#"{"service_name":"x"}"#).unwrap();
        assert_eq!(partial.log_filter, "info");
    }
}
