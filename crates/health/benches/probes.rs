#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Probe cost next to its anchors: a bare axum route for the HTTP path, and
//! a plain `join_all` of the same checks for `check_all`.

use std::sync::Arc;
use std::time::Duration;

use agent_patterns_health::*;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;

fn healthy(name: &'static str) -> FnHealthCheck<impl Fn() -> std::future::Ready<ComponentHealth>> {
    FnHealthCheck::new(name, || std::future::ready(ComponentHealth::healthy("ok")))
}

fn system(cache_ttl: Duration) -> SystemHealthCheck {
    let mut system = SystemHealthCheck::with_config(HealthConfig {
        cache_ttl,
        ..HealthConfig::default()
    })
    .unwrap();
    for name in ["database", "llm_service", "cache"] {
        system.add_check(Arc::new(healthy(name)));
    }
    system
}

fn request() -> Request<Body> {
    Request::get("/health/ready").body(Body::empty()).unwrap()
}

fn readiness_route(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let bare: Router = Router::new().route("/health/ready", get(|| async { "ok" }));
    let cached: Router = probe_routes(Arc::new(system(Duration::from_secs(3600))));
    let live: Router = probe_routes(Arc::new(system(Duration::from_secs(3600))));

    let mut group = c.benchmark_group("health_readiness_route");
    group.bench_function("anchor_bare_axum_route", |b| {
        b.iter(|| rt.block_on(bare.clone().oneshot(request())).unwrap())
    });
    group.bench_function("readiness_3_cached_checks", |b| {
        b.iter(|| rt.block_on(cached.clone().oneshot(request())).unwrap())
    });
    group.bench_function("liveness", |b| {
        b.iter(|| {
            rt.block_on(
                live.clone()
                    .oneshot(Request::get("/health/live").body(Body::empty()).unwrap()),
            )
            .unwrap()
        })
    });
    group.finish();
}

fn check_all(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let uncached = system(Duration::ZERO);
    let plain: Vec<Arc<dyn HealthCheckable>> = ["database", "llm_service", "cache"]
        .into_iter()
        .map(|n| Arc::new(healthy(n)) as Arc<dyn HealthCheckable>)
        .collect();

    let mut group = c.benchmark_group("health_check_all");
    group.bench_function("anchor_plain_join_all", |b| {
        b.iter(|| {
            rt.block_on(futures::future::join_all(
                plain.iter().map(|check| check.check_health()),
            ))
        })
    });
    group.bench_function("check_all_uncached_with_timeout_and_panic_guard", |b| {
        b.iter(|| rt.block_on(uncached.check_all()))
    });
    group.finish();
}

criterion_group!(benches, readiness_route, check_all);
criterion_main!(benches);
