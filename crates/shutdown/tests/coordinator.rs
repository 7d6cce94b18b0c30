#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The coordinator's sequence, timeouts and reports, on virtual time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_patterns_shutdown::*;
use proptest::prelude::*;
use tokio::time::Instant;

/// Which handler ran, from when to when.
type Log = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

/// A handler that sleeps (or hangs, or fails) and records when it ran.
struct Probe {
    name: String,
    phase: ShutdownPhase,
    behaviour: Behaviour,
    log: Log,
    calls: AtomicUsize,
}

#[derive(Clone)]
enum Behaviour {
    Sleep(Duration),
    Hang,
    Fail(&'static str),
    Panic(&'static str),
}

impl Probe {
    fn new(name: &str, phase: ShutdownPhase, behaviour: Behaviour, log: &Log) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            phase,
            behaviour,
            log: Arc::clone(log),
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl ShutdownHandler for Probe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn shutdown(&self) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        let result = match self.behaviour.clone() {
            Behaviour::Sleep(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Behaviour::Hang => futures_pending().await,
            Behaviour::Fail(msg) => Err(msg.to_owned()),
            Behaviour::Panic(msg) => panic!("{msg}"),
        };
        self.log
            .lock()
            .unwrap()
            .push((self.name.clone(), start, Instant::now()));
        result
    }

    fn phase(&self) -> ShutdownPhase {
        self.phase
    }
}

async fn futures_pending() -> Result<(), String> {
    std::future::pending().await
}

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

#[tokio::test(start_paused = true)]
async fn phases_run_in_order_and_handlers_of_a_phase_run_concurrently() {
    let log = log();
    let coordinator = ShutdownCoordinator::new(Duration::from_secs(30));
    // Registered out of order on purpose.
    for (name, phase) in [
        ("pool", ShutdownPhase::CloseResources),
        ("audit", ShutdownPhase::FlushBuffers),
        ("server", ShutdownPhase::StopAccepting),
        ("metrics", ShutdownPhase::FlushBuffers),
        ("gate", ShutdownPhase::Unready),
    ] {
        coordinator.register(Probe::new(
            name,
            phase,
            Behaviour::Sleep(Duration::from_secs(1)),
            &log,
        ));
    }
    let start = Instant::now();
    let report = coordinator.shutdown().await.unwrap();

    let names: Vec<_> = report.handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gate",
            "server",
            IN_FLIGHT_TASKS,
            "audit",
            "metrics",
            "pool"
        ]
    );
    // Four phases with a 1 s handler each; the two flushes overlap.
    assert_eq!(report.elapsed, Duration::from_secs(4));
    let log = log.lock().unwrap();
    let at = |name: &str| log.iter().find(|(n, ..)| n == name).unwrap().1 - start;
    assert_eq!(at("gate"), Duration::ZERO);
    assert_eq!(at("server"), Duration::from_secs(1));
    assert_eq!(at("audit"), Duration::from_secs(2));
    assert_eq!(at("metrics"), Duration::from_secs(2));
    assert_eq!(at("pool"), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn hanging_handler_is_cancelled_at_its_timeout_and_named_in_the_report() {
    let log = log();
    let coordinator = ShutdownCoordinator::with_config(
        ShutdownConfig::with_timeout(Duration::from_secs(30))
            .handler_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    coordinator.register(Probe::new(
        "stuck_cache",
        ShutdownPhase::FlushBuffers,
        Behaviour::Hang,
        &log,
    ));
    coordinator.register(Probe::new(
        "audit",
        ShutdownPhase::FlushBuffers,
        Behaviour::Sleep(Duration::from_millis(10)),
        &log,
    ));
    coordinator.register(Probe::new(
        "pool",
        ShutdownPhase::CloseResources,
        Behaviour::Sleep(Duration::ZERO),
        &log,
    ));

    let err = coordinator.shutdown().await.unwrap_err();
    assert!(err.to_string().contains("stuck_cache"), "{err}");
    let report = err.report().unwrap();
    assert_eq!(
        report.handler("stuck_cache").unwrap().outcome,
        HandlerOutcome::TimedOut(Duration::from_secs(10))
    );
    assert!(report.handler("audit").unwrap().outcome.is_success());
    assert!(report.handler("pool").unwrap().outcome.is_success());
    assert_eq!(report.elapsed, Duration::from_secs(10));
    assert!(!report.deadline_exceeded);
    assert_eq!(report.failures().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn hanging_handler_never_holds_the_shutdown_past_the_overall_deadline() {
    let log = log();
    let coordinator = ShutdownCoordinator::with_config(
        ShutdownConfig::with_timeout(Duration::from_secs(5))
            .handler_timeout(Duration::from_secs(5))
            .drain_delay(Duration::from_secs(2)),
    )
    .unwrap();
    coordinator.register(Probe::new(
        "server",
        ShutdownPhase::StopAccepting,
        Behaviour::Hang,
        &log,
    ));
    coordinator.register(Probe::new(
        "pool",
        ShutdownPhase::CloseResources,
        Behaviour::Sleep(Duration::ZERO),
        &log,
    ));

    let start = Instant::now();
    let err = coordinator.shutdown().await.unwrap_err();
    let report = err.report().unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(7),
        "drain delay + timeout"
    );
    assert_eq!(report.elapsed, Duration::from_secs(7));
    assert!(report.deadline_exceeded);
    assert_eq!(
        report.handler("server").unwrap().outcome,
        HandlerOutcome::TimedOut(Duration::from_secs(5))
    );
    assert_eq!(
        report.handler("pool").unwrap().outcome,
        HandlerOutcome::Skipped
    );
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_handlers_are_reported_and_the_others_still_run() {
    let log = log();
    let coordinator = ShutdownCoordinator::new(Duration::from_secs(30));
    coordinator.register(Probe::new(
        "cache",
        ShutdownPhase::FlushBuffers,
        Behaviour::Fail("redis unreachable"),
        &log,
    ));
    coordinator.register(Probe::new(
        "exporter",
        ShutdownPhase::FlushBuffers,
        Behaviour::Panic("exporter bug"),
        &log,
    ));
    let pool = Probe::new(
        "pool",
        ShutdownPhase::CloseResources,
        Behaviour::Sleep(Duration::ZERO),
        &log,
    );
    coordinator.register(pool.clone());

    let err = coordinator.shutdown().await.unwrap_err();
    let report = err.report().unwrap();
    assert_eq!(
        report.handler("cache").unwrap().outcome,
        HandlerOutcome::Failed("redis unreachable".into())
    );
    assert_eq!(
        report.handler("exporter").unwrap().outcome,
        HandlerOutcome::Panicked("exporter bug".into())
    );
    assert_eq!(pool.calls.load(Ordering::SeqCst), 1);
    assert!(report.handler("pool").unwrap().outcome.is_success());
}

#[tokio::test(start_paused = true)]
async fn second_shutdown_call_waits_for_the_first_and_runs_handlers_once() {
    let log = log();
    let coordinator = Arc::new(ShutdownCoordinator::new(Duration::from_secs(30)));
    let audit = Probe::new(
        "audit",
        ShutdownPhase::FlushBuffers,
        Behaviour::Sleep(Duration::from_secs(3)),
        &log,
    );
    coordinator.register(audit.clone());

    let first = tokio::spawn({
        let c = Arc::clone(&coordinator);
        async move { c.shutdown().await }
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    let second = coordinator.shutdown().await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "the second call waited"
    );
    let first = first.await.unwrap().unwrap();
    assert_eq!(first, second);
    assert_eq!(audit.calls.load(Ordering::SeqCst), 1);
    assert_eq!(coordinator.report().as_deref(), Some(&first));

    let third = coordinator.shutdown().await.unwrap();
    assert_eq!(third, first);
    assert_eq!(audit.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_shutdown_future_does_not_interrupt_the_sequence() {
    let log = log();
    let coordinator = ShutdownCoordinator::new(Duration::from_secs(30));
    let audit = Probe::new(
        "audit",
        ShutdownPhase::FlushBuffers,
        Behaviour::Sleep(Duration::from_secs(3)),
        &log,
    );
    coordinator.register(audit.clone());
    let abandoned = tokio::time::timeout(Duration::from_secs(1), coordinator.shutdown()).await;
    assert!(abandoned.is_err());
    let report = coordinator.shutdown().await.unwrap();
    assert_eq!(report.elapsed, Duration::from_secs(3));
    assert_eq!(audit.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn draining_fires_at_once_and_subscribers_after_the_drain_delay() {
    let coordinator = Arc::new(
        ShutdownCoordinator::with_config(
            ShutdownConfig::default().drain_delay(Duration::from_secs(5)),
        )
        .unwrap(),
    );
    let mut draining = coordinator.draining();
    let mut stop = coordinator.subscribe();
    let start = Instant::now();
    let running = tokio::spawn({
        let c = Arc::clone(&coordinator);
        async move { c.shutdown().await }
    });

    draining.recv().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(coordinator.is_shutting_down());
    assert!(!stop.is_triggered());

    stop.recv().await;
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.elapsed, Duration::from_secs(5));

    let mut late = coordinator.subscribe();
    late.recv().await; // a late subscriber does not miss the signal
    assert!(coordinator.cancellation_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_tracked_in_flight_tasks() {
    let coordinator = ShutdownCoordinator::new(Duration::from_secs(30));
    let finished = Arc::new(AtomicUsize::new(0));
    for secs in [1, 4] {
        let finished = Arc::clone(&finished);
        coordinator.spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            finished.fetch_add(1, Ordering::SeqCst);
        });
    }
    let report = coordinator.shutdown().await.unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 2);
    let drain = report.handler(IN_FLIGHT_TASKS).unwrap();
    assert_eq!(drain.phase, ShutdownPhase::DrainInFlight);
    assert_eq!(drain.elapsed, Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn in_flight_task_that_outlives_the_handler_timeout_is_reported() {
    let coordinator = ShutdownCoordinator::with_config(
        ShutdownConfig::default().handler_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let token = coordinator.cancellation_token();
    coordinator.spawn(async move {
        // ignores the token on purpose
        let _token = token;
        std::future::pending::<()>().await;
    });
    let err = coordinator.shutdown().await.unwrap_err();
    assert_eq!(
        err.report()
            .unwrap()
            .handler(IN_FLIGHT_TASKS)
            .unwrap()
            .outcome,
        HandlerOutcome::TimedOut(Duration::from_secs(2))
    );
}

#[tokio::test(start_paused = true)]
async fn cooperative_task_stops_when_the_token_is_cancelled() {
    let coordinator = ShutdownCoordinator::new(Duration::from_secs(30));
    let token = coordinator.cancellation_token();
    coordinator.spawn(async move { token.cancelled().await });
    let report = coordinator.shutdown().await.unwrap();
    assert_eq!(report.elapsed, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn registration_after_the_start_or_beyond_the_limit_is_refused() {
    let log = log();
    let coordinator = ShutdownCoordinator::with_config(ShutdownConfig {
        max_handlers: 1,
        ..ShutdownConfig::default()
    })
    .unwrap();
    let handler = |name| {
        Probe::new(
            name,
            ShutdownPhase::FlushBuffers,
            Behaviour::Sleep(Duration::ZERO),
            &log,
        )
    };
    coordinator
        .try_register(ShutdownPhase::FlushBuffers, handler("a"))
        .unwrap();
    let err = coordinator
        .try_register(ShutdownPhase::FlushBuffers, handler("b"))
        .unwrap_err();
    assert!(
        matches!(err, ShutdownError::TooManyHandlers { ref name, max_handlers: 1 } if name == "b")
    );

    coordinator.shutdown().await.unwrap();
    let err = coordinator
        .try_register(ShutdownPhase::FlushBuffers, handler("late"))
        .unwrap_err();
    assert!(matches!(err, ShutdownError::AlreadyStarted(ref name) if name == "late"));
}

#[tokio::test(start_paused = true)]
async fn register_in_overrides_the_handlers_phase() {
    let log = log();
    let coordinator = ShutdownCoordinator::new(Duration::from_secs(30));
    coordinator.register_in(
        ShutdownPhase::Unready,
        Probe::new(
            "flag",
            ShutdownPhase::CloseResources,
            Behaviour::Sleep(Duration::ZERO),
            &log,
        ),
    );
    let report = coordinator.shutdown().await.unwrap();
    assert_eq!(report.handlers[0].name, "flag");
    assert_eq!(report.handlers[0].phase, ShutdownPhase::Unready);
}

#[tokio::test(start_paused = true)]
async fn zero_timeout_coordinator_finishes_at_once_reporting_every_handler() {
    let log = log();
    let coordinator = ShutdownCoordinator::new(Duration::ZERO);
    coordinator.register(Probe::new(
        "audit",
        ShutdownPhase::FlushBuffers,
        Behaviour::Sleep(Duration::from_secs(1)),
        &log,
    ));
    let err = coordinator.shutdown().await.unwrap_err();
    let report = err.report().unwrap();
    assert!(report.elapsed <= Duration::from_millis(1));
    assert!(!report.handler("audit").unwrap().outcome.is_success());
}

#[test]
fn handler_durations_are_recorded_with_prometheus_names() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let coordinator = ShutdownCoordinator::new(Duration::from_secs(30));
            coordinator.register(Probe::new(
                "audit",
                ShutdownPhase::FlushBuffers,
                Behaviour::Sleep(Duration::from_secs(1)),
                &log(),
            ));
            coordinator.shutdown().await.unwrap();
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let names: Vec<_> = snapshot
        .iter()
        .map(|(k, ..)| k.key().name().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "shutdown_duration_seconds"),
        "{names:?}"
    );
    let audit = snapshot
        .iter()
        .find(|(k, ..)| {
            k.key().name() == "shutdown_handler_duration_seconds"
                && k.key()
                    .labels()
                    .any(|l| l.key() == "handler" && l.value() == "audit")
        })
        .unwrap();
    assert!(
        audit
            .0
            .key()
            .labels()
            .any(|l| l.key() == "outcome" && l.value() == "completed")
    );
}

fn phase() -> impl Strategy<Value = ShutdownPhase> {
    proptest::sample::select(ShutdownPhase::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_handler_starts_before_every_earlier_phase_has_finished(
        handlers in proptest::collection::vec((phase(), 0u64..5_000, any::<bool>()), 1..10)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (report, log) = rt.block_on(async {
            let log = log();
            let coordinator = ShutdownCoordinator::with_config(
                ShutdownConfig::with_timeout(Duration::from_secs(60))
                    .handler_timeout(Duration::from_secs(3)),
            )
            .unwrap();
            for (i, (phase, millis, hang)) in handlers.iter().enumerate() {
                let behaviour = if *hang {
                    Behaviour::Hang
                } else {
                    Behaviour::Sleep(Duration::from_millis(*millis))
                };
                coordinator.register(Probe::new(&format!("h{i}"), *phase, behaviour, &log));
            }
            let report = match coordinator.shutdown().await {
                Ok(report) => report,
                Err(err) => err.report().unwrap().clone(),
            };
            let log = log.lock().unwrap().clone();
            (report, log)
        });
        // Every handler is reported exactly once, plus the built-in drain.
        prop_assert_eq!(report.handlers.len(), handlers.len() + 1);
        for (i, (phase, millis, hang)) in handlers.iter().enumerate() {
            let entry = report.handler(&format!("h{i}")).unwrap();
            prop_assert_eq!(entry.phase, *phase);
            if *hang || *millis > 3_000 {
                prop_assert!(matches!(entry.outcome, HandlerOutcome::TimedOut(_)), "{:?}", entry);
            } else if *millis < 3_000 {
                prop_assert!(entry.outcome.is_success(), "{:?}", entry);
            }
            prop_assert!(entry.elapsed <= Duration::from_secs(3));
        }
        // Phases never overlap: a handler of a later phase starts after every
        // completed handler of an earlier phase ended.
        let phase_of = |name: &str| report.handler(name).unwrap().phase;
        for (a, _, a_end) in &log {
            for (b, b_start, _) in &log {
                if phase_of(a) < phase_of(b) {
                    prop_assert!(a_end <= b_start, "{} ended after {} started", a, b);
                }
            }
        }
        prop_assert!(report.elapsed <= Duration::from_secs(60));
    }
}
