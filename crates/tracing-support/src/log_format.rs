//! Log line formats that join logs to traces.
//!
//! Both formats append the W3C `trace_id` and `span_id` of the current
//! OpenTelemetry span to every line written inside a span, so a log search
//! for a trace id finds the same request that the trace backend shows.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The trace and span ids of the innermost entered span, if it has a valid
/// OpenTelemetry context (the OpenTelemetry layer activates it on entry).
pub fn current_trace_ids() -> Option<(String, String)> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`,
/// `fields`, `span` (innermost span and its fields), `spans` (names, root
/// first), `trace_id`, `span_id`.
///
/// Span fields must be formatted with
/// [`JsonFields`](tracing_subscriber::fmt::format::JsonFields) to appear in `span`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLogFormat;

impl<S, N> FormatEvent<S, N> for JsonLogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));

        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        if let Some(message) = visitor.fields.remove("message") {
            line.insert("message".into(), message);
        }
        if !visitor.fields.is_empty() {
            line.insert("fields".into(), Value::Object(visitor.fields));
        }

        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            let mut innermost = None;
            for span in scope {
                if innermost.is_none() {
                    let mut object = Map::new();
                    object.insert("name".into(), Value::String(span.name().to_owned()));
                    let extensions = span.extensions();
                    if let Some(fields) = extensions.get::<FormattedFields<N>>()
                        && let Ok(Value::Object(parsed)) =
                            serde_json::from_str::<Value>(&fields.fields)
                    {
                        object.extend(parsed);
                    }
                    innermost = Some(object);
                }
                names.push(Value::String(span.name().to_owned()));
            }
            names.reverse();
            if let Some(object) = innermost {
                line.insert("span".into(), Value::Object(object));
            }
            line.insert("spans".into(), Value::Array(names));
        }

        if let Some((trace_id, span_id)) = current_trace_ids() {
            line.insert("trace_id".into(), Value::String(trace_id));
            line.insert("span_id".into(), Value::String(span_id));
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Human-readable lines for a terminal:
/// `timestamp LEVEL span{fields}:child{fields}: target: message fields trace_id=… span_id=…`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextLogFormat;

impl<S, N> FormatEvent<S, N> for TextLogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        SystemTime.format_time(&mut writer)?;
        let level = meta.level();
        if writer.has_ansi_escapes() {
            write!(writer, " \x1b[{}m{level:>5}\x1b[0m ", level_colour(level))?;
        } else {
            write!(writer, " {level:>5} ")?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}", span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.fields.is_empty()
                {
                    write!(writer, "{{{}}}", fields.fields)?;
                }
                write!(writer, ":")?;
            }
            write!(writer, " ")?;
        }
        write!(writer, "{}: ", meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        if let Some((trace_id, span_id)) = current_trace_ids() {
            write!(writer, " trace_id={trace_id} span_id={span_id}")?;
        }
        writeln!(writer)
    }
}

fn level_colour(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 31,
        Level::WARN => 33,
        Level::INFO => 32,
        Level::DEBUG => 34,
        Level::TRACE => 35,
    }
}

#[derive(Default)]
struct JsonVisitor {
    fields: Map<String, Value>,
}

impl JsonVisitor {
    fn insert(&mut self, field: &Field, value: Value) {
        // Fields forwarded from the `log` crate describe the call site, not the event.
        if !field.name().starts_with("log.") {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.insert(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::String(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
    }
}
