//! What a shutdown did: [`ShutdownReport`] and [`ShutdownError`].

use std::fmt;
use std::time::Duration;

use agent_patterns_core::AgentError;

use crate::ShutdownPhase;

/// How one handler ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerOutcome {
    /// Returned `Ok(())`.
    Completed,
    /// Returned `Err` with this message.
    Failed(String),
    /// Did not finish within its timeout (the per-handler timeout or what
    /// was left of the overall deadline); it was cancelled.
    TimedOut(Duration),
    /// Panicked with this message.
    Panicked(String),
    /// Never started: the overall deadline had passed before its phase.
    Skipped,
}

impl HandlerOutcome {
    /// `true` for [`Completed`](Self::Completed).
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Completed)
    }

    /// A short label for metrics: `completed`, `failed`, `timed_out`,
    /// `panicked`, `skipped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed(_) => "failed",
            Self::TimedOut(_) => "timed_out",
            Self::Panicked(_) => "panicked",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for HandlerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Completed => f.write_str("completed"),
            Self::Failed(e) => write!(f, "failed: {e}"),
            Self::TimedOut(d) => write!(f, "timed out after {d:?}"),
            Self::Panicked(p) => write!(f, "panicked: {p}"),
            Self::Skipped => f.write_str("skipped: deadline exceeded before its phase"),
        }
    }
}

/// One handler's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerReport {
    /// The handler's name.
    pub name: String,
    /// The phase it ran in.
    pub phase: ShutdownPhase,
    /// How it ended.
    pub outcome: HandlerOutcome,
    /// How long it ran.
    pub elapsed: Duration,
}

/// What a shutdown did, handler by handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every handler, in phase order (and registration order within a
    /// phase). The built-in drain of the coordinator's task tracker appears
    /// as `in_flight_tasks`.
    pub handlers: Vec<HandlerReport>,
    /// Time from the start of the shutdown to its end, drain delay included.
    pub elapsed: Duration,
    /// Whether the overall deadline cut the shutdown short.
    pub deadline_exceeded: bool,
}

impl ShutdownReport {
    /// `true` when every handler completed.
    pub fn is_success(&self) -> bool {
        self.handlers.iter().all(|h| h.outcome.is_success())
    }

    /// The handlers that did not complete.
    pub fn failures(&self) -> impl Iterator<Item = &HandlerReport> {
        self.handlers.iter().filter(|h| !h.outcome.is_success())
    }

    /// The report of the handler named `name`.
    pub fn handler(&self, name: &str) -> Option<&HandlerReport> {
        self.handlers.iter().find(|h| h.name == name)
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shutdown took {:?}", self.elapsed)?;
        if self.deadline_exceeded {
            f.write_str(" (deadline exceeded)")?;
        }
        for h in &self.handlers {
            write!(
                f,
                "; {} [{}] {} in {:?}",
                h.name, h.phase, h.outcome, h.elapsed
            )?;
        }
        Ok(())
    }
}

/// Why a shutdown (or its setup) did not go cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The shutdown ran, but some handlers failed, timed out, panicked or
    /// were skipped. The report names them.
    #[error("shutdown incomplete: {}", failed_names(.0))]
    Incomplete(Box<ShutdownReport>),
    /// A configuration field has an invalid value.
    #[error("invalid shutdown configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why its value is rejected.
        reason: &'static str,
    },
    /// A handler was registered after the shutdown had started.
    #[error("cannot register shutdown handler `{0}`: the shutdown has already started")]
    AlreadyStarted(String),
    /// More handlers were registered than `max_handlers` allows.
    #[error(
        "cannot register shutdown handler `{name}`: the limit of {max_handlers} handlers (`max_handlers`) is reached"
    )]
    TooManyHandlers {
        /// The handler that was refused.
        name: String,
        /// The configured limit.
        max_handlers: usize,
    },
    /// Listening for SIGTERM/SIGINT failed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[from] std::io::Error),
}

impl ShutdownError {
    /// The report, when the shutdown ran.
    pub fn report(&self) -> Option<&ShutdownReport> {
        match self {
            Self::Incomplete(report) => Some(report),
            _ => None,
        }
    }
}

fn failed_names(report: &ShutdownReport) -> String {
    report
        .failures()
        .map(|h| format!("{} ({})", h.name, h.outcome))
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<ShutdownError> for AgentError {
    fn from(err: ShutdownError) -> Self {
        match err {
            ShutdownError::InvalidConfig { .. } => AgentError::Config(err.to_string()),
            other => AgentError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_error_names_the_failed_handlers() {
        let report = ShutdownReport {
            handlers: vec![
                HandlerReport {
                    name: "server".into(),
                    phase: ShutdownPhase::StopAccepting,
                    outcome: HandlerOutcome::Completed,
                    elapsed: Duration::from_millis(5),
                },
                HandlerReport {
                    name: "audit".into(),
                    phase: ShutdownPhase::FlushBuffers,
                    outcome: HandlerOutcome::TimedOut(Duration::from_secs(10)),
                    elapsed: Duration::from_secs(10),
                },
            ],
            elapsed: Duration::from_secs(10),
            deadline_exceeded: false,
        };
        assert!(!report.is_success());
        let err = ShutdownError::Incomplete(Box::new(report));
        let text = err.to_string();
        assert!(text.contains("audit (timed out after 10s)"), "{text}");
        assert!(!text.contains("server"), "{text}");
        assert_eq!(err.report().unwrap().failures().count(), 1);
    }

    #[test]
    fn shutdown_error_is_a_boxable_std_error() {
        fn boxed(e: ShutdownError) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            Box::new(e)
        }
        let e = boxed(ShutdownError::AlreadyStarted("db".into()));
        assert!(e.to_string().contains("db"));
    }
}
