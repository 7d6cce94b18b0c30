//! In-process agent metrics, mirrored to the `metrics` facade.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

/// Prometheus name of the tool-call counter (labels `tool`, `status`).
pub const TOOL_CALLS_TOTAL: &str = "agent_tool_calls_total";
/// Prometheus name of the tool-latency histogram (label `tool`).
pub const TOOL_LATENCY_SECONDS: &str = "agent_tool_latency_seconds";
/// Prometheus name of the error counter.
pub const ERRORS_TOTAL: &str = "agent_errors_total";

/// Label used for tools past [`AgentMetrics::with_limits`]' `max_tools`.
pub const OTHER_TOOL: &str = "_other";

/// Register descriptions and units of the metrics above with the installed
/// recorder. Call once after installing a recorder; harmless if none is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        TOOL_CALLS_TOTAL,
        "Tool calls made by the agent, by tool and status."
    );
    metrics::describe_histogram!(
        TOOL_LATENCY_SECONDS,
        metrics::Unit::Seconds,
        "Latency of tool calls, by tool."
    );
    metrics::describe_counter!(ERRORS_TOTAL, "Errors recorded by the agent.");
}

/// Counts tool calls and errors for an agent, keeps the latest error messages
/// for display, and emits every observation through the `metrics` facade
/// (`agent_tool_calls_total{tool,status}`, `agent_tool_latency_seconds{tool}`,
/// `agent_errors_total`) so an installed Prometheus recorder exports them.
///
/// Memory is bounded: at most `max_errors` messages are kept (oldest dropped)
/// and at most `max_tools` distinct tool names are tracked (later names are
/// counted under [`OTHER_TOOL`]), so a caller cannot grow it with arbitrary
/// tool names.
///
/// ```
/// use std::time::Duration;
/// use agent_patterns_core::AgentMetrics;
///
/// let metrics = AgentMetrics::new();
/// metrics.record_tool_call("search", true, Duration::from_millis(250));
/// metrics.record_tool_call("calculator", false, Duration::from_millis(50));
/// metrics.record_error("Rate limit exceeded".to_string());
///
/// let snapshot = metrics.snapshot();
/// assert_eq!(snapshot.total_tool_calls, 2);
/// assert_eq!(snapshot.success_rate(), 0.5);
/// assert_eq!(snapshot.recent_errors, ["Rate limit exceeded"]);
/// ```
#[derive(Debug)]
pub struct AgentMetrics {
    total_calls: AtomicU64,
    successful_calls: AtomicU64,
    total_errors: AtomicU64,
    max_errors: usize,
    max_tools: usize,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default)]
struct Detail {
    errors: VecDeque<String>,
    tools: HashMap<String, ToolStats>,
}

/// Per-tool figures in a [`MetricsSnapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ToolStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Sum of call latencies.
    pub total_latency: Duration,
    /// Slowest call.
    pub max_latency: Duration,
}

impl ToolStats {
    /// Mean latency, zero without calls.
    pub fn mean_latency(&self) -> Duration {
        match u32::try_from(self.calls) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_latency / n,
            Err(_) => Duration::from_secs_f64(self.total_latency.as_secs_f64() / self.calls as f64),
        }
    }
}

/// A point-in-time copy of [`AgentMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// Tool calls recorded.
    pub total_tool_calls: u64,
    /// Tool calls that succeeded.
    pub successful_tool_calls: u64,
    /// Tool calls that failed.
    pub failed_tool_calls: u64,
    /// Errors recorded (including those no longer kept in `recent_errors`).
    pub total_errors: u64,
    /// The most recent error messages, oldest first.
    pub recent_errors: Vec<String>,
    /// Figures per tool name.
    pub tools: HashMap<String, ToolStats>,
}

impl MetricsSnapshot {
    /// Share of tool calls that succeeded, from 0.0 to 1.0; 1.0 when no call
    /// was made (nothing has failed).
    pub fn success_rate(&self) -> f64 {
        if self.total_tool_calls == 0 {
            1.0
        } else {
            self.successful_tool_calls as f64 / self.total_tool_calls as f64
        }
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Default number of error messages kept.
    pub const DEFAULT_MAX_ERRORS: usize = 100;
    /// Default number of distinct tool names tracked.
    pub const DEFAULT_MAX_TOOLS: usize = 256;

    /// Metrics with the default bounds (100 errors, 256 tools).
    pub fn new() -> Self {
        Self::with_limits(Self::DEFAULT_MAX_ERRORS, Self::DEFAULT_MAX_TOOLS)
    }

    /// Metrics keeping at most `max_errors` messages and `max_tools` tool names.
    /// A bound of 0 keeps none (counts are still exact).
    pub fn with_limits(max_errors: usize, max_tools: usize) -> Self {
        Self {
            total_calls: AtomicU64::new(0),
            successful_calls: AtomicU64::new(0),
            total_errors: AtomicU64::new(0),
            max_errors,
            max_tools,
            detail: Mutex::new(Detail::default()),
        }
    }

    /// Record one tool call, its outcome and how long it took.
    pub fn record_tool_call(&self, tool: &str, success: bool, duration: Duration) {
        self.total_calls.fetch_add(1, Ordering::Relaxed);
        if success {
            self.successful_calls.fetch_add(1, Ordering::Relaxed);
        }
        let label = {
            let mut detail = self.lock();
            let known = detail.tools.contains_key(tool);
            let name = if known || detail.tools.len() < self.max_tools {
                tool
            } else {
                OTHER_TOOL
            };
            let stats = match detail.tools.get_mut(name) {
                Some(stats) => stats,
                None => detail.tools.entry(name.to_owned()).or_default(),
            };
            stats.calls += 1;
            stats.successes += u64::from(success);
            stats.total_latency = stats.total_latency.saturating_add(duration);
            stats.max_latency = stats.max_latency.max(duration);
            name.to_owned()
        };
        let status = if success { "success" } else { "failure" };
        metrics::counter!(TOOL_CALLS_TOTAL, "tool" => label.clone(), "status" => status)
            .increment(1);
        metrics::histogram!(TOOL_LATENCY_SECONDS, "tool" => label).record(duration.as_secs_f64());
    }

    /// Record an error message.
    pub fn record_error(&self, error: impl Into<String>) {
        self.total_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ERRORS_TOTAL).increment(1);
        if self.max_errors == 0 {
            return;
        }
        let mut detail = self.lock();
        if detail.errors.len() == self.max_errors {
            detail.errors.pop_front();
        }
        detail.errors.push_back(error.into());
    }

    /// A consistent copy of the figures.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let detail = self.lock();
        let total = self.total_calls.load(Ordering::Relaxed);
        let ok = self.successful_calls.load(Ordering::Relaxed);
        MetricsSnapshot {
            total_tool_calls: total,
            successful_tool_calls: ok,
            failed_tool_calls: total.saturating_sub(ok),
            total_errors: self.total_errors.load(Ordering::Relaxed),
            recent_errors: detail.errors.iter().cloned().collect(),
            tools: detail.tools.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::{CompositeKey, MetricKind};

    #[test]
    fn success_rate_counts_failures() {
        let m = AgentMetrics::new();
        assert_eq!(m.snapshot().success_rate(), 1.0);
        for i in 0..10 {
            m.record_tool_call("search", i % 5 != 0, Duration::from_millis(10 * i));
        }
        let s = m.snapshot();
        assert_eq!(s.total_tool_calls, 10);
        assert_eq!(s.failed_tool_calls, 2);
        assert!((s.success_rate() - 0.8).abs() < 1e-12);
        let search = s.tools["search"];
        assert_eq!(search.calls, 10);
        assert_eq!(search.max_latency, Duration::from_millis(90));
        assert_eq!(search.mean_latency(), Duration::from_millis(45));
    }

    #[test]
    fn error_list_is_bounded_and_keeps_the_newest() {
        let m = AgentMetrics::with_limits(3, 8);
        for i in 0..10 {
            m.record_error(format!("e{i}"));
        }
        let s = m.snapshot();
        assert_eq!(s.total_errors, 10);
        assert_eq!(s.recent_errors, ["e7", "e8", "e9"]);
    }

    #[test]
    fn tool_names_past_the_bound_are_grouped() {
        let m = AgentMetrics::with_limits(1, 2);
        for t in ["a", "b", "c", "d", "a"] {
            m.record_tool_call(t, true, Duration::ZERO);
        }
        let s = m.snapshot();
        assert_eq!(s.tools.len(), 3);
        assert_eq!(s.tools["a"].calls, 2);
        assert_eq!(s.tools[OTHER_TOOL].calls, 2);
    }

    #[test]
    fn emits_the_guides_metric_names() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let m = AgentMetrics::new();
            m.record_tool_call("search", true, Duration::from_millis(250));
            m.record_tool_call("search", false, Duration::from_millis(50));
            m.record_error("x");
        });
        let snap = snapshotter.snapshot().into_vec();
        let find = |kind: MetricKind, name: &str, labels: &[(&str, &str)]| {
            snap.iter()
                .find(|(k, _, _, _): &&(CompositeKey, _, _, DebugValue)| {
                    k.kind() == kind
                        && k.key().name() == name
                        && labels.iter().all(|(lk, lv)| {
                            k.key().labels().any(|l| l.key() == *lk && l.value() == *lv)
                        })
                })
                .map(|(_, _, _, v)| v)
        };
        assert_eq!(
            find(
                MetricKind::Counter,
                TOOL_CALLS_TOTAL,
                &[("tool", "search"), ("status", "success")]
            ),
            Some(&DebugValue::Counter(1))
        );
        assert_eq!(
            find(
                MetricKind::Counter,
                TOOL_CALLS_TOTAL,
                &[("tool", "search"), ("status", "failure")]
            ),
            Some(&DebugValue::Counter(1))
        );
        match find(
            MetricKind::Histogram,
            TOOL_LATENCY_SECONDS,
            &[("tool", "search")],
        ) {
            Some(DebugValue::Histogram(v)) => {
                let mut secs: Vec<f64> = v.iter().map(|x| x.into_inner()).collect();
                secs.sort_by(f64::total_cmp);
                assert_eq!(secs, [0.05, 0.25]);
            }
            other => panic!("no latency histogram: {other:?}"),
        }
        assert_eq!(
            find(MetricKind::Counter, ERRORS_TOTAL, &[]),
            Some(&DebugValue::Counter(1))
        );
    }
}
