//! The crate's error type.

use std::time::Duration;

/// Why setting up or shutting down observability failed.
///
/// Every variant names what the operator has to fix: the config field or
/// environment variable, the endpoint, or the step that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TracingError {
    /// A configuration value (or the environment variable that set it) is invalid.
    #[error("invalid tracing configuration: `{field}`: {reason}")]
    Config {
        /// The config field or environment variable at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OTLP exporter could not be built (bad endpoint, transport setup).
    #[error("could not build the OTLP span exporter for `{endpoint}`: {reason}")]
    Exporter {
        /// The endpoint the exporter was built for.
        endpoint: String,
        /// The exporter's own error.
        reason: String,
    },
    /// A global subscriber (or this crate's pipeline) is already installed.
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
    /// Spans could not be delivered to the collector during a flush.
    #[error("{failed_spans} span(s) could not be exported during flush")]
    ExportFailed {
        /// How many spans the collector did not accept during the flush.
        failed_spans: u64,
    },
    /// A flush or shutdown did not finish within its bound.
    #[error("tracing {operation} did not finish within {timeout:?}")]
    Timeout {
        /// `flush` or `shutdown`.
        operation: &'static str,
        /// The bound that was exceeded.
        timeout: Duration,
    },
    /// The OpenTelemetry SDK reported a failure while flushing or shutting down.
    #[error("tracing {operation} failed: {reason}")]
    Sdk {
        /// `flush` or `shutdown`.
        operation: &'static str,
        /// The SDK's message.
        reason: String,
    },
    /// The Prometheus recorder could not be built or installed.
    #[error("prometheus exporter: {0}")]
    Prometheus(String),
}

impl TracingError {
    /// Shorthand for a [`TracingError::Config`] naming `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
