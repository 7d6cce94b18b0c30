//! [`ShutdownCoordinator`]: runs the registered handlers phase by phase under
//! one deadline, and tells subscribers when to stop.

use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::{
    HandlerOutcome, HandlerReport, ShutdownConfig, ShutdownError, ShutdownHandler, ShutdownPhase,
    ShutdownReport,
};

/// The name under which the drain of the coordinator's task tracker appears
/// in the [`ShutdownReport`].
pub const IN_FLIGHT_TASKS: &str = "in_flight_tasks";

/// A receiver of the shutdown signal.
///
/// [`recv`](Self::recv) completes once the coordinator tells servers to stop
/// accepting work (see [`ShutdownCoordinator::subscribe`]); it completes at
/// once for a receiver created after that moment, so no subscriber can miss
/// the signal.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    token: CancellationToken,
}

impl ShutdownSignal {
    /// Waits for the signal.
    pub async fn recv(&mut self) {
        self.token.cancelled().await;
    }

    /// Whether the signal has been given.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// The signal as a `'static` future, e.g. for
/// `axum::serve(..).with_graceful_shutdown(shutdown.subscribe().into_future())`.
impl std::future::IntoFuture for ShutdownSignal {
    type Output = ();
    type IntoFuture = WaitForCancellationFutureOwned;

    fn into_future(self) -> Self::IntoFuture {
        self.token.cancelled_owned()
    }
}

struct Registration {
    phase: ShutdownPhase,
    handler: Arc<dyn ShutdownHandler>,
}

struct Inner {
    config: ShutdownConfig,
    handlers: Mutex<Vec<Registration>>,
    /// Cancelled when the shutdown starts.
    draining: CancellationToken,
    /// Cancelled when [`ShutdownPhase::StopAccepting`] begins.
    stopping: CancellationToken,
    tracker: TaskTracker,
    started: AtomicBool,
    report: watch::Sender<Option<Arc<ShutdownReport>>>,
}

impl Inner {
    fn handlers(&self) -> MutexGuard<'_, Vec<Registration>> {
        // A panic while holding this lock cannot leave the Vec half-updated
        // (push and take are single operations), so a poisoned lock is safe.
        self.handlers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Coordinates a graceful shutdown.
///
/// [`shutdown`](Self::shutdown) runs this sequence once:
///
/// 1. [`ShutdownPhase::Unready`] handlers (readiness turns 503), and
///    [`draining`](Self::draining) receivers fire.
/// 2. The drain delay ([`ShutdownConfig::drain_delay`]) lets the load
///    balancer notice.
/// 3. [`subscribe`](Self::subscribe) receivers fire and the
///    [`StopAccepting`](ShutdownPhase::StopAccepting) handlers run (the
///    server stops accepting and finishes its requests).
/// 4. [`DrainInFlight`](ShutdownPhase::DrainInFlight): the
///    [`task_tracker`](Self::task_tracker) is closed and awaited, alongside
///    that phase's handlers.
/// 5. [`FlushBuffers`](ShutdownPhase::FlushBuffers), then
///    [`CloseResources`](ShutdownPhase::CloseResources).
///
/// Handlers of one phase run concurrently, each in its own task, bounded by
/// the per-handler timeout and by what is left of the overall deadline
/// (`drain_delay + timeout` from the start). A handler that errors, panics or
/// hangs is reported by name and cancelled; it delays the later phases at
/// most until its timeout.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use agent_patterns_shutdown::*;
///
/// struct Flush;
///
/// #[async_trait]
/// impl ShutdownHandler for Flush {
///     fn name(&self) -> &str { "audit_log" }
///     async fn shutdown(&self) -> Result<(), String> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let shutdown = Arc::new(ShutdownCoordinator::new(Duration::from_secs(30)));
/// shutdown.register(Arc::new(Flush));
/// let mut rx = shutdown.subscribe();
///
/// let report = shutdown.shutdown().await?;
/// rx.recv().await; // already fired
/// assert!(report.handler("audit_log").unwrap().outcome.is_success());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ShutdownCoordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShutdownCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownCoordinator")
            .field("config", &self.inner.config)
            .field("handlers", &self.inner.handlers().len())
            .field("started", &self.is_shutting_down())
            .finish()
    }
}

impl ShutdownCoordinator {
    /// A coordinator with an overall deadline of `timeout` (see
    /// [`ShutdownConfig::with_timeout`]). A zero timeout is raised to 1 ms:
    /// handlers then get no time and are reported as timed out or skipped.
    pub fn new(timeout: Duration) -> Self {
        let timeout = timeout.max(Duration::from_millis(1));
        Self::build(ShutdownConfig::with_timeout(timeout))
    }

    /// A coordinator with a validated configuration.
    pub fn with_config(config: ShutdownConfig) -> Result<Self, ShutdownError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: ShutdownConfig) -> Self {
        let (report, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                config,
                handlers: Mutex::new(Vec::new()),
                draining: CancellationToken::new(),
                stopping: CancellationToken::new(),
                tracker: TaskTracker::new(),
                started: AtomicBool::new(false),
                report,
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ShutdownConfig {
        &self.inner.config
    }

    /// Registers a handler in its own [`phase`](ShutdownHandler::phase).
    ///
    /// A registration that cannot be accepted (after the shutdown started,
    /// or beyond `max_handlers`) is logged as an error; use
    /// [`try_register`](Self::try_register) to get the error.
    pub fn register(&self, handler: Arc<dyn ShutdownHandler>) {
        let phase = handler.phase();
        self.register_in(phase, handler);
    }

    /// Registers a handler in an explicit phase; see
    /// [`register`](Self::register).
    pub fn register_in(&self, phase: ShutdownPhase, handler: Arc<dyn ShutdownHandler>) {
        if let Err(err) = self.try_register(phase, handler) {
            tracing::error!(error = %err, "shutdown handler not registered");
        }
    }

    /// Registers a handler in `phase`, or says why it cannot.
    pub fn try_register(
        &self,
        phase: ShutdownPhase,
        handler: Arc<dyn ShutdownHandler>,
    ) -> Result<(), ShutdownError> {
        let mut handlers = self.inner.handlers();
        if self.inner.started.load(Ordering::Acquire) {
            return Err(ShutdownError::AlreadyStarted(handler.name().to_owned()));
        }
        if handlers.len() >= self.inner.config.max_handlers {
            return Err(ShutdownError::TooManyHandlers {
                name: handler.name().to_owned(),
                max_handlers: self.inner.config.max_handlers,
            });
        }
        handlers.push(Registration { phase, handler });
        Ok(())
    }

    /// A receiver that fires when servers must stop accepting work: when
    /// [`ShutdownPhase::StopAccepting`] begins, after the drain delay.
    ///
    /// Pass it to `axum::serve(..).with_graceful_shutdown`.
    pub fn subscribe(&self) -> ShutdownSignal {
        ShutdownSignal {
            token: self.inner.stopping.clone(),
        }
    }

    /// A receiver that fires as soon as the shutdown starts, before the
    /// drain delay.
    pub fn draining(&self) -> ShutdownSignal {
        ShutdownSignal {
            token: self.inner.draining.clone(),
        }
    }

    /// The token behind [`subscribe`](Self::subscribe), for code built on
    /// tokio-util (child tokens, `run_until_cancelled`).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inner.stopping.clone()
    }

    /// The tracker of in-flight background work. Tasks spawned on it (or
    /// futures wrapped with `track_future`) are awaited during
    /// [`ShutdownPhase::DrainInFlight`]; combine with
    /// [`cancellation_token`](Self::cancellation_token) so long tasks can
    /// stop early.
    pub fn task_tracker(&self) -> TaskTracker {
        self.inner.tracker.clone()
    }

    /// Spawns a task that the shutdown waits for during
    /// [`ShutdownPhase::DrainInFlight`].
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.tracker.spawn(task)
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }

    /// The report of a finished shutdown.
    pub fn report(&self) -> Option<Arc<ShutdownReport>> {
        self.inner.report.borrow().clone()
    }

    /// Runs the shutdown sequence and returns its report; `Err` carries the
    /// report when a handler did not complete.
    ///
    /// Idempotent: the sequence runs once, in its own task (so dropping this
    /// future does not interrupt it); every call waits for that run and
    /// returns its outcome.
    pub async fn shutdown(&self) -> Result<ShutdownReport, ShutdownError> {
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(Arc::clone(&self.inner)));
        }
        let mut rx = self.inner.report.subscribe();
        let report = loop {
            if let Some(report) = rx.borrow_and_update().clone() {
                break report;
            }
            if rx.changed().await.is_err() {
                // Unreachable while `self` holds the sender; kept total.
                return Err(ShutdownError::Incomplete(Box::default()));
            }
        };
        if report.is_success() {
            Ok(ShutdownReport::clone(&report))
        } else {
            Err(ShutdownError::Incomplete(Box::new(ShutdownReport::clone(
                &report,
            ))))
        }
    }

    /// Waits for SIGTERM or SIGINT (see [`wait_for_signal`](crate::wait_for_signal)),
    /// then runs [`shutdown`](Self::shutdown).
    pub async fn shutdown_on_signal(&self) -> Result<ShutdownReport, ShutdownError> {
        let signal = crate::wait_for_signal().await?;
        tracing::info!(%signal, "shutdown signal received");
        self.shutdown().await
    }
}

async fn run(inner: Arc<Inner>) {
    let start = Instant::now();
    let config = &inner.config;
    let deadline = start + config.max_duration();
    let mut registrations = std::mem::take(&mut *inner.handlers());
    registrations.sort_by_key(|r| r.phase);
    tracing::info!(
        handlers = registrations.len(),
        drain_delay = ?config.drain_delay,
        timeout = ?config.timeout,
        "graceful shutdown started"
    );

    inner.draining.cancel();
    let mut reports = Vec::with_capacity(registrations.len() + 1);
    for phase in ShutdownPhase::ALL {
        if phase == ShutdownPhase::StopAccepting {
            // Tokio rounds timers up to the next millisecond tick, so an
            // elapsed (or zero) delay is not slept at all.
            let drained = start + config.drain_delay;
            if Instant::now() < drained {
                tokio::time::sleep_until(drained).await;
            }
            inner.stopping.cancel();
        }
        let mut tasks: Vec<(String, ShutdownPhase, Instant, Supervised)> = Vec::new();
        if phase == ShutdownPhase::DrainInFlight {
            inner.tracker.close();
            let tracker = inner.tracker.clone();
            tasks.push(supervise(
                IN_FLIGHT_TASKS.to_owned(),
                phase,
                deadline,
                config.handler_timeout,
                async move {
                    tracker.wait().await;
                    Ok(())
                },
            ));
        }
        for reg in registrations.iter().filter(|r| r.phase == phase) {
            let handler = Arc::clone(&reg.handler);
            tasks.push(supervise(
                reg.handler.name().to_owned(),
                phase,
                deadline,
                config.handler_timeout,
                async move { handler.shutdown().await },
            ));
        }
        for (name, phase, started, supervised) in tasks {
            let outcome = supervised.outcome().await;
            let elapsed = started.elapsed();
            record(&name, phase, &outcome, elapsed);
            reports.push(HandlerReport {
                name,
                phase,
                outcome,
                elapsed,
            });
        }
    }

    let elapsed = start.elapsed();
    let report = ShutdownReport {
        deadline_exceeded: reports.iter().any(|r| r.outcome == HandlerOutcome::Skipped)
            || Instant::now() >= deadline,
        handlers: reports,
        elapsed,
    };
    metrics::histogram!("shutdown_duration_seconds").record(elapsed.as_secs_f64());
    if report.is_success() {
        tracing::info!(?elapsed, "graceful shutdown complete");
    } else {
        tracing::error!(%report, "graceful shutdown incomplete");
    }
    inner.report.send_replace(Some(Arc::new(report)));
}

enum Supervised {
    Skipped,
    Running(JoinHandle<HandlerOutcome>),
}

impl Supervised {
    async fn outcome(self) -> HandlerOutcome {
        match self {
            Self::Skipped => HandlerOutcome::Skipped,
            Self::Running(task) => task
                .await
                .unwrap_or_else(|e| HandlerOutcome::Failed(format!("supervisor stopped: {e}"))),
        }
    }
}

/// Starts `work` in its own task, bounded by `handler_timeout` and by the
/// deadline; the returned supervisor reports how it ended.
fn supervise<F>(
    name: String,
    phase: ShutdownPhase,
    deadline: Instant,
    handler_timeout: Duration,
    work: F,
) -> (String, ShutdownPhase, Instant, Supervised)
where
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let now = Instant::now();
    let budget = handler_timeout.min(deadline.saturating_duration_since(now));
    if budget.is_zero() {
        tracing::error!(handler = %name, %phase, "shutdown handler skipped: deadline exceeded");
        return (name, phase, now, Supervised::Skipped);
    }
    tracing::debug!(handler = %name, %phase, ?budget, "running shutdown handler");
    let supervisor = tokio::spawn(async move {
        let mut task = tokio::spawn(work);
        match tokio::time::timeout(budget, &mut task).await {
            Ok(Ok(Ok(()))) => HandlerOutcome::Completed,
            Ok(Ok(Err(e))) => HandlerOutcome::Failed(e),
            Ok(Err(e)) if e.is_panic() => HandlerOutcome::Panicked(panic_message(e.into_panic())),
            Ok(Err(e)) => HandlerOutcome::Failed(format!("handler task cancelled: {e}")),
            Err(_) => {
                task.abort();
                HandlerOutcome::TimedOut(budget)
            }
        }
    });
    (name, phase, now, Supervised::Running(supervisor))
}

fn record(name: &str, phase: ShutdownPhase, outcome: &HandlerOutcome, elapsed: Duration) {
    metrics::histogram!(
        "shutdown_handler_duration_seconds",
        "handler" => name.to_owned(),
        "phase" => phase.as_str(),
        "outcome" => outcome.as_str()
    )
    .record(elapsed.as_secs_f64());
    if outcome.is_success() {
        tracing::info!(handler = %name, %phase, ?elapsed, "shutdown handler completed");
    } else {
        tracing::error!(handler = %name, %phase, ?elapsed, %outcome, "shutdown handler did not complete");
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&'static str>().map_or_else(
            || "non-string panic payload".to_owned(),
            |s| (*s).to_owned(),
        ),
    }
}
