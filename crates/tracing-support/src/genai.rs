//! Spans and metrics for LLM and tool calls, following the OpenTelemetry
//! semantic conventions for generative AI.
//!
//! * [`ChatSpan`]: a client span named `chat {model}` with the `gen_ai.*`
//!   request and response attributes; on finish (or drop) it records
//!   `gen_ai.client.operation.duration` and `gen_ai.client.token.usage`.
//! * [`ToolSpan`]: an internal span named `execute_tool {tool}`.
//!
//! Message contents are recorded only when capture is enabled, per span
//! ([`ChatSpan::capture_content`]) or for the process with
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`; they go to the
//! trace as span attributes, never to the logs.

use std::sync::OnceLock;

use opentelemetry::{Array, StringValue, Value};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Attribute names, values, metric names and bucket boundaries of the
/// GenAI semantic conventions, pinned to
/// [`SEMCONV_VERSION`](crate::genai::semconv::SEMCONV_VERSION).
///
/// Defined here rather than taken from `opentelemetry-semantic-conventions`,
/// whose `gen_ai` constants are experimental and deprecated between releases.
pub mod semconv {
    /// The semantic-conventions release these names follow.
    pub const SEMCONV_VERSION: &str = "1.37.0";

    /// `gen_ai.operation.name`: `chat`, `execute_tool`, ...
    pub const OPERATION_NAME: &str = "gen_ai.operation.name";
    /// `gen_ai.provider.name`: `openai`, `anthropic`, `aws.bedrock`, ...
    pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
    /// `gen_ai.request.model`.
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    /// `gen_ai.request.max_tokens`.
    pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    /// `gen_ai.request.temperature`.
    pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    /// `gen_ai.response.model`.
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    /// `gen_ai.response.id`.
    pub const RESPONSE_ID: &str = "gen_ai.response.id";
    /// `gen_ai.response.finish_reasons` (string array).
    pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    /// `gen_ai.usage.input_tokens`.
    pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    /// `gen_ai.usage.output_tokens`.
    pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// `gen_ai.tool.name`.
    pub const TOOL_NAME: &str = "gen_ai.tool.name";
    /// `gen_ai.tool.call.id`.
    pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
    /// `gen_ai.tool.type`: `function`, `extension`, `datastore`.
    pub const TOOL_TYPE: &str = "gen_ai.tool.type";
    /// `gen_ai.token.type`: `input` or `output` (metric attribute).
    pub const TOKEN_TYPE: &str = "gen_ai.token.type";
    /// `gen_ai.input.messages` (opt-in content).
    pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
    /// `gen_ai.output.messages` (opt-in content).
    pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
    /// `error.type`: the class of error that ended the operation.
    pub const ERROR_TYPE: &str = "error.type";

    /// `gen_ai.operation.name` value for chat completions.
    pub const OPERATION_CHAT: &str = "chat";
    /// `gen_ai.operation.name` value for tool execution.
    pub const OPERATION_EXECUTE_TOOL: &str = "execute_tool";

    /// Prometheus name of `gen_ai.client.operation.duration` (seconds histogram).
    pub const CLIENT_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
    /// Prometheus name of `gen_ai.client.token.usage` (token-count histogram).
    pub const CLIENT_TOKEN_USAGE: &str = "gen_ai_client_token_usage";

    /// Bucket boundaries the conventions advise for `gen_ai.client.operation.duration`.
    pub const OPERATION_DURATION_BUCKETS: [f64; 14] = [
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ];
    /// Bucket boundaries the conventions advise for `gen_ai.client.token.usage`.
    pub const TOKEN_USAGE_BUCKETS: [f64; 14] = [
        1.0,
        4.0,
        16.0,
        64.0,
        256.0,
        1024.0,
        4096.0,
        16384.0,
        65536.0,
        262_144.0,
        1_048_576.0,
        4_194_304.0,
        16_777_216.0,
        67_108_864.0,
    ];

    /// Prometheus label names of the metric attributes (dots become underscores).
    pub mod labels {
        /// `gen_ai.operation.name`.
        pub const OPERATION_NAME: &str = "gen_ai_operation_name";
        /// `gen_ai.provider.name`.
        pub const PROVIDER_NAME: &str = "gen_ai_provider_name";
        /// `gen_ai.request.model`.
        pub const REQUEST_MODEL: &str = "gen_ai_request_model";
        /// `gen_ai.response.model`.
        pub const RESPONSE_MODEL: &str = "gen_ai_response_model";
        /// `gen_ai.token.type`.
        pub const TOKEN_TYPE: &str = "gen_ai_token_type";
        /// `error.type`.
        pub const ERROR_TYPE: &str = "error_type";
    }
}

/// Whether message contents are recorded by default:
/// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`, read once.
pub fn capture_message_content_default() -> bool {
    static DEFAULT: OnceLock<bool> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
    })
}

/// The span of one chat call to an LLM, child of the current span.
///
/// ```
/// use agent_patterns_tracing_support::ChatSpan;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut chat = ChatSpan::start("openai", "gpt-4o");
/// // let response = llm.call(...).instrument(chat.span().clone()).await;
/// chat.record_response_model("gpt-4o-2024-08-06");
/// chat.record_usage(120, 48);
/// chat.record_finish_reasons(&["stop"]);
/// chat.finish();
/// # }
/// ```
#[derive(Debug)]
pub struct ChatSpan {
    span: tracing::Span,
    started: Instant,
    provider: String,
    request_model: String,
    response_model: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    error_type: Option<String>,
    capture_content: bool,
    finished: bool,
}

impl ChatSpan {
    /// Opens the span `chat {model}` (kind client) for `provider` (a
    /// `gen_ai.provider.name` value such as `openai` or `anthropic`).
    pub fn start(provider: &str, model: &str) -> Self {
        let span = tracing::info_span!(
            "chat",
            otel.name = %format_args!("{} {}", semconv::OPERATION_CHAT, model),
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = semconv::OPERATION_CHAT,
            gen_ai.provider.name = %provider,
            gen_ai.request.model = %model,
            gen_ai.response.model = Empty,
            gen_ai.response.id = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            error.type = Empty,
        );
        Self {
            span,
            started: Instant::now(),
            provider: provider.to_owned(),
            request_model: model.to_owned(),
            response_model: None,
            input_tokens: None,
            output_tokens: None,
            error_type: None,
            capture_content: capture_message_content_default(),
            finished: false,
        }
    }

    /// Enables or disables recording of message contents for this call.
    pub fn capture_content(mut self, enabled: bool) -> Self {
        self.capture_content = enabled;
        self
    }

    /// The span, to `instrument` the call's future or `enter` it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// `gen_ai.request.max_tokens` and `gen_ai.request.temperature`.
    pub fn record_request_parameters(&self, max_tokens: Option<u64>, temperature: Option<f64>) {
        if let Some(max_tokens) = max_tokens {
            self.span
                .set_attribute(semconv::REQUEST_MAX_TOKENS, saturating_i64(max_tokens));
        }
        if let Some(temperature) = temperature {
            self.span
                .set_attribute(semconv::REQUEST_TEMPERATURE, temperature);
        }
    }

    /// `gen_ai.response.model`: the model that actually answered.
    pub fn record_response_model(&mut self, model: &str) {
        self.span.record(semconv::RESPONSE_MODEL, model);
        self.response_model = Some(model.to_owned());
    }

    /// `gen_ai.response.id`.
    pub fn record_response_id(&self, id: &str) {
        self.span.record(semconv::RESPONSE_ID, id);
    }

    /// `gen_ai.usage.input_tokens` / `output_tokens`; also recorded in
    /// `gen_ai.client.token.usage` when the span finishes.
    pub fn record_usage(&mut self, input_tokens: u64, output_tokens: u64) {
        // The OpenTelemetry layer exports only i64 fields as integers.
        self.span
            .record(semconv::USAGE_INPUT_TOKENS, saturating_i64(input_tokens));
        self.span
            .record(semconv::USAGE_OUTPUT_TOKENS, saturating_i64(output_tokens));
        self.input_tokens = Some(input_tokens);
        self.output_tokens = Some(output_tokens);
    }

    /// `gen_ai.response.finish_reasons`, as a string array attribute.
    pub fn record_finish_reasons(&self, reasons: &[&str]) {
        let values: Vec<StringValue> = reasons.iter().map(|r| (*r).to_owned().into()).collect();
        self.span.set_attribute(
            semconv::RESPONSE_FINISH_REASONS,
            Value::Array(Array::String(values)),
        );
    }

    /// `gen_ai.input.messages` (JSON), only when content capture is enabled.
    /// Returns whether it was recorded.
    pub fn record_input_messages(&self, messages_json: &str) -> bool {
        self.record_content(semconv::INPUT_MESSAGES, messages_json)
    }

    /// `gen_ai.output.messages` (JSON), only when content capture is enabled.
    /// Returns whether it was recorded.
    pub fn record_output_messages(&self, messages_json: &str) -> bool {
        self.record_content(semconv::OUTPUT_MESSAGES, messages_json)
    }

    fn record_content(&self, key: &'static str, json: &str) -> bool {
        if self.capture_content {
            self.span.set_attribute(key, json.to_owned());
        }
        self.capture_content
    }

    /// Marks the call failed with `error_type` (e.g. `timeout`, `rate_limited`,
    /// an HTTP status code): `error.type` and an error status on the span.
    pub fn record_error(&mut self, error_type: &str) {
        self.span.record(semconv::ERROR_TYPE, error_type);
        self.span.record("otel.status_code", "ERROR");
        self.error_type = Some(error_type.to_owned());
    }

    /// Closes the span and records the duration and token metrics.
    /// Dropping the `ChatSpan` does the same.
    pub fn finish(mut self) {
        self.record_metrics();
    }

    fn record_metrics(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        // Finishing happens once, so the span's strings move into the labels.
        let mut labels = Vec::with_capacity(5);
        labels.push(metrics::Label::from_static_parts(
            semconv::labels::OPERATION_NAME,
            semconv::OPERATION_CHAT,
        ));
        labels.push(metrics::Label::new(
            semconv::labels::PROVIDER_NAME,
            std::mem::take(&mut self.provider),
        ));
        labels.push(metrics::Label::new(
            semconv::labels::REQUEST_MODEL,
            std::mem::take(&mut self.request_model),
        ));
        if let Some(model) = self.response_model.take() {
            labels.push(metrics::Label::new(semconv::labels::RESPONSE_MODEL, model));
        }
        let token_labels =
            (self.input_tokens.is_some() || self.output_tokens.is_some()).then(|| labels.clone());
        if let Some(error) = self.error_type.take() {
            labels.push(metrics::Label::new(semconv::labels::ERROR_TYPE, error));
        }
        record_duration(labels, self.started);
        let Some(token_labels) = token_labels else {
            return;
        };
        for (kind, tokens) in [("input", self.input_tokens), ("output", self.output_tokens)] {
            if let Some(tokens) = tokens {
                let mut labels = Vec::with_capacity(token_labels.len() + 1);
                labels.extend_from_slice(&token_labels);
                labels.push(metrics::Label::from_static_parts(
                    semconv::labels::TOKEN_TYPE,
                    kind,
                ));
                #[allow(clippy::cast_precision_loss)]
                metrics::histogram!(semconv::CLIENT_TOKEN_USAGE, labels).record(tokens as f64);
            }
        }
    }
}

impl Drop for ChatSpan {
    fn drop(&mut self) {
        self.record_metrics();
    }
}

/// The span of one tool execution, child of the current span.
///
/// ```
/// use agent_patterns_tracing_support::ToolSpan;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tool = ToolSpan::start("search", Some("call_42"));
/// // let output = run_search(...).instrument(tool.span().clone()).await;
/// tool.finish();
/// # }
/// ```
#[derive(Debug)]
pub struct ToolSpan {
    span: tracing::Span,
    started: Instant,
    tool: String,
    error_type: Option<String>,
    finished: bool,
}

impl ToolSpan {
    /// Opens the span `execute_tool {tool}` (kind internal), with the
    /// model-issued call id when there is one.
    pub fn start(tool: &str, call_id: Option<&str>) -> Self {
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = %format_args!("{} {}", semconv::OPERATION_EXECUTE_TOOL, tool),
            otel.kind = "internal",
            otel.status_code = Empty,
            gen_ai.operation.name = semconv::OPERATION_EXECUTE_TOOL,
            gen_ai.tool.name = %tool,
            gen_ai.tool.type = "function",
            gen_ai.tool.call.id = Empty,
            error.type = Empty,
        );
        if let Some(id) = call_id {
            span.record(semconv::TOOL_CALL_ID, id);
        }
        Self {
            span,
            started: Instant::now(),
            tool: tool.to_owned(),
            error_type: None,
            finished: false,
        }
    }

    /// The span, to `instrument` the tool's future or `enter` it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Marks the execution failed with `error_type`.
    pub fn record_error(&mut self, error_type: &str) {
        self.span.record(semconv::ERROR_TYPE, error_type);
        self.span.record("otel.status_code", "ERROR");
        self.error_type = Some(error_type.to_owned());
    }

    /// Closes the span and records its duration in
    /// `gen_ai.client.operation.duration`. Dropping does the same.
    pub fn finish(mut self) {
        self.record_metrics();
    }

    fn record_metrics(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let mut labels = Vec::with_capacity(3);
        labels.push(metrics::Label::from_static_parts(
            semconv::labels::OPERATION_NAME,
            semconv::OPERATION_EXECUTE_TOOL,
        ));
        labels.push(metrics::Label::new(
            "gen_ai_tool_name",
            std::mem::take(&mut self.tool),
        ));
        if let Some(error) = self.error_type.take() {
            labels.push(metrics::Label::new(semconv::labels::ERROR_TYPE, error));
        }
        record_duration(labels, self.started);
    }
}

impl Drop for ToolSpan {
    fn drop(&mut self) {
        self.record_metrics();
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn record_duration(labels: Vec<metrics::Label>, started: Instant) {
    metrics::histogram!(semconv::CLIENT_OPERATION_DURATION, labels)
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::time::Duration;

    type Labels = Vec<(String, String)>;

    fn histogram_values(
        snapshot: &[(
            metrics_util::CompositeKey,
            Option<metrics::Unit>,
            Option<metrics::SharedString>,
            DebugValue,
        )],
        name: &str,
    ) -> Vec<(Labels, Vec<f64>)> {
        snapshot
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .map(|(key, _, _, value)| {
                let labels = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                let values = match value {
                    DebugValue::Histogram(v) => v.iter().map(|x| x.into_inner()).collect(),
                    other => panic!("not a histogram: {other:?}"),
                };
                (labels, values)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn chat_span_records_duration_and_tokens_on_finish() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let mut chat =
            metrics::with_local_recorder(&recorder, || ChatSpan::start("openai", "gpt-4o"));
        tokio::time::advance(Duration::from_millis(1500)).await;
        chat.record_response_model("gpt-4o-2024");
        chat.record_usage(120, 48);
        metrics::with_local_recorder(&recorder, || chat.finish());

        let snapshot = snapshotter.snapshot().into_vec();
        let durations = histogram_values(&snapshot, semconv::CLIENT_OPERATION_DURATION);
        assert_eq!(durations.len(), 1);
        let (labels, values) = &durations[0];
        assert_eq!(values, &vec![1.5]);
        assert!(labels.contains(&("gen_ai_provider_name".into(), "openai".into())));
        assert!(labels.contains(&("gen_ai_request_model".into(), "gpt-4o".into())));
        assert!(labels.contains(&("gen_ai_response_model".into(), "gpt-4o-2024".into())));
        assert!(labels.contains(&("gen_ai_operation_name".into(), "chat".into())));

        let mut tokens = histogram_values(&snapshot, semconv::CLIENT_TOKEN_USAGE);
        tokens.sort_by(|a, b| a.1[0].total_cmp(&b.1[0]));
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].1, vec![48.0]);
        assert!(
            tokens[0]
                .0
                .contains(&("gen_ai_token_type".into(), "output".into()))
        );
        assert_eq!(tokens[1].1, vec![120.0]);
        assert!(
            tokens[1]
                .0
                .contains(&("gen_ai_token_type".into(), "input".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_spans_record_once_with_error_type() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let mut tool = ToolSpan::start("search", Some("call_1"));
            tool.record_error("timeout");
            drop(tool);
            let mut chat = ChatSpan::start("anthropic", "claude");
            chat.record_error("rate_limited");
            chat.finish();
        });
        let snapshot = snapshotter.snapshot().into_vec();
        let durations = histogram_values(&snapshot, semconv::CLIENT_OPERATION_DURATION);
        assert_eq!(durations.len(), 2);
        for (labels, values) in &durations {
            assert_eq!(values.len(), 1, "recorded once");
            assert!(labels.iter().any(|(k, _)| k == "error_type"));
        }
        assert!(histogram_values(&snapshot, semconv::CLIENT_TOKEN_USAGE).is_empty());
    }

    #[test]
    fn content_is_not_recorded_unless_enabled() {
        let chat = ChatSpan::start("openai", "m").capture_content(false);
        assert!(!chat.record_input_messages(r#"[{"role":"user"}]"#));
        let chat = chat.capture_content(true);
        assert!(chat.record_output_messages("[]"));
    }
}
