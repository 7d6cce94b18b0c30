#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bulkhead: limits under load, the bounded queue, release on every exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_patterns_core::AgentError;
use agent_patterns_resilience::*;

fn config(max: usize, wait_ms: u64) -> BulkheadConfig {
    BulkheadConfig {
        max_concurrent: max,
        acquire_timeout: Duration::from_millis(wait_ms),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_never_exceeds_max_concurrent() {
    let bulkhead = Arc::new(Bulkhead::new("tools", config(3, 60_000)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (b, in_flight, peak) = (
                Arc::clone(&bulkhead),
                Arc::clone(&in_flight),
                Arc::clone(&peak),
            );
            tokio::spawn(async move {
                b.execute(async {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert_eq!(bulkhead.active(), 0);
}

#[tokio::test(start_paused = true)]
async fn waiting_callers_time_out_with_bulkhead_full() {
    let bulkhead = Bulkhead::new("tools", config(1, 5000));
    let slot = bulkhead.acquire().await.unwrap();
    let start = tokio::time::Instant::now();
    let err = bulkhead.execute(async { 1 }).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(matches!(err, BulkheadError::Timeout { .. }));
    let agent: AgentError = err.into();
    assert_eq!(agent, AgentError::BulkheadFull);
    drop(slot);
    assert_eq!(bulkhead.execute(async { 2 }).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_fails_fast() {
    let bulkhead = Arc::new(Bulkhead::with_queue("tools", config(1, 60_000), 2).unwrap());
    let _slot = bulkhead.acquire().await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let b = Arc::clone(&bulkhead);
        waiters.push(tokio::spawn(async move { b.execute(async {}).await }));
    }
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.queued(), 2);
    let start = tokio::time::Instant::now();
    let err = bulkhead.execute(async {}).await.unwrap_err();
    assert!(matches!(err, BulkheadError::QueueFull { max_queue: 2, .. }));
    assert_eq!(start.elapsed(), Duration::ZERO);
    for w in waiters {
        w.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn slots_come_back_on_cancellation_and_panic() {
    let bulkhead = Arc::new(Bulkhead::new("tools", config(1, 1000)));
    let cancelled = tokio::time::timeout(
        Duration::from_millis(10),
        bulkhead.execute(std::future::pending::<()>()),
    )
    .await;
    assert!(cancelled.is_err());
    assert_eq!(bulkhead.active(), 0);

    let b = Arc::clone(&bulkhead);
    let panicked = tokio::spawn(async move {
        b.execute(async {
            panic!("tool crashed");
        })
        .await
    })
    .await;
    assert!(panicked.is_err());
    assert_eq!(bulkhead.active(), 0);
    assert_eq!(bulkhead.execute(async { 7 }).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue() {
    let bulkhead = Bulkhead::new("tools", config(1, 60_000));
    let _slot = bulkhead.acquire().await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(10), bulkhead.acquire()).await;
    assert!(waited.is_err());
    assert_eq!(bulkhead.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_changes_at_run_time() {
    let bulkhead = Bulkhead::new("tools", config(2, 0));
    let a = bulkhead.acquire().await.unwrap();
    let b = bulkhead.acquire().await.unwrap();
    bulkhead.set_max_concurrent(1).unwrap();
    drop(a);
    assert!(
        bulkhead.try_acquire().is_err(),
        "one slot still busy and the limit is 1"
    );
    drop(b);
    let c = bulkhead.try_acquire().unwrap();
    assert!(bulkhead.try_acquire().is_err());
    bulkhead.set_max_concurrent(3).unwrap();
    let _d = bulkhead.try_acquire().unwrap();
    let _e = bulkhead.try_acquire().unwrap();
    assert!(bulkhead.try_acquire().is_err());
    assert_eq!(bulkhead.snapshot().active, 3);
    drop(c);
    assert!(bulkhead.set_max_concurrent(0).is_err());
}

#[tokio::test]
async fn zero_capacity_is_refused_not_a_hang() {
    assert_eq!(
        Bulkhead::try_new("x", config(0, 1000)).unwrap_err().field,
        "max_concurrent"
    );
    let b = Bulkhead::new("x", config(0, 60_000));
    assert!(matches!(
        b.execute(async {}).await,
        Err(BulkheadError::QueueFull { .. })
    ));
}
