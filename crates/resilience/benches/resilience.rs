#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Each group measures one of our primitives next to its anchor in the same
//! run. Functions named `anchor_*` are the anchors; `cargo xtask bench`
//! prints every other function's time as a multiple of its group's anchor.
//!
//! Every group runs twice: without a metrics recorder, then (suffix
//! `_prometheus`) with the Prometheus recorder installed, since the metric
//! handles are registered when a primitive is created.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use agent_patterns_resilience::*;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;

fn governor() -> governor::DefaultDirectRateLimiter {
    let huge = NonZeroU32::new(1_000_000_000).unwrap();
    governor::RateLimiter::direct(governor::Quota::per_second(huge).allow_burst(huge))
}

fn limiter() -> RateLimiter {
    RateLimiter::new(
        "bench",
        RateLimiterConfig {
            capacity: 1_000_000_000,
            refill_rate: 1e9,
        },
    )
}

/// Run `op` `iters` times split over two threads; the wall time of the slower.
fn two_threads(iters: u64, op: impl Fn() + Sync) -> Duration {
    let half = iters / 2 + 1;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..half {
                    op();
                }
            });
        }
    });
    start.elapsed()
}

fn groups(c: &mut Criterion, suffix: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let mut g = c.benchmark_group(format!("rate_limiter_admit{suffix}"));
    let gov = governor();
    g.bench_function("anchor_governor_check", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });
    let ours = limiter();
    g.bench_function("ours_try_acquire", |b| {
        b.iter(|| black_box(ours.try_acquire(1).now_or_never().map(|r| r.is_ok())))
    });
    g.bench_function("ours_check", |b| {
        b.iter(|| black_box(ours.check(1).is_ok()))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("rate_limiter_admit_two_threads{suffix}"));
    let gov = governor();
    g.bench_function("anchor_governor_check", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(gov.check().is_ok());
            })
        })
    });
    let ours = limiter();
    g.bench_function("ours_check", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(ours.check(1).is_ok());
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("circuit_breaker_closed{suffix}"));
    let gov = governor();
    g.bench_function("anchor_governor_check", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });
    let breaker = CircuitBreaker::new("bench", CircuitBreakerConfig::default());
    g.bench_function("ours_allow_and_record_success", |b| {
        b.iter(|| {
            let allowed = breaker.allow_request().now_or_never();
            breaker.record_success().now_or_never();
            black_box(allowed)
        })
    });
    g.bench_function("ours_permit_success", |b| {
        b.iter(|| black_box(breaker.acquire_permission().map(CallPermit::success)))
    });
    g.bench_function("ours_call", |b| {
        b.iter(|| black_box(breaker.call(async { Ok::<u8, ()>(1) }).now_or_never()))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("bulkhead_ready{suffix}"));
    let semaphore = tokio::sync::Semaphore::new(100);
    g.bench_function("anchor_semaphore_acquire_drop", |b| {
        b.iter(|| black_box(semaphore.acquire().now_or_never().map(drop)))
    });
    let bulkhead = Bulkhead::new(
        "bench",
        BulkheadConfig {
            max_concurrent: 100,
            acquire_timeout: Duration::from_secs(1),
        },
    );
    g.bench_function("ours_execute", |b| {
        b.iter(|| black_box(bulkhead.execute(async { 1u8 }).now_or_never()))
    });
    g.finish();
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

fn keyed(c: &mut Criterion) {
    const KEYS: u64 = 100_000;
    let before = resident_kib();
    let keyed = KeyedRateLimiter::new(
        "bench",
        RateLimiterConfig {
            capacity: 1_000_000,
            refill_rate: 1e6,
        },
        200_000,
    )
    .unwrap();
    for key in 0..KEYS {
        keyed.check(&key, 1).unwrap();
    }
    let after = resident_kib();
    eprintln!(
        "keyed limiter: {KEYS} keys; table {} bytes ({} bytes per key); resident memory grew {} KiB",
        keyed.memory_bytes(),
        keyed.memory_bytes() as u64 / KEYS,
        after.saturating_sub(before),
    );
    let mut g = c.benchmark_group("keyed_limiter_100k");
    let gov = governor::RateLimiter::hashmap(governor::Quota::per_second(
        NonZeroU32::new(1_000_000).unwrap(),
    ));
    for key in 0..KEYS {
        let _ = gov.check_key(&key);
    }
    let mut i = 0u64;
    g.bench_function("anchor_governor_keyed_check", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(gov.check_key(&i).is_ok())
        })
    });
    let mut j = 0u64;
    g.bench_function("ours_keyed_check", |b| {
        b.iter(|| {
            j = (j + 7919) % KEYS;
            black_box(keyed.check(&j, 1).is_ok())
        })
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    groups(c, "");
    keyed(c);
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("install the Prometheus recorder");
    groups(c, "_prometheus");
}

criterion_group!(benches, all);
criterion_main!(benches);
