#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]
//! HTTP throughput of the full agent stack against a bare axum handler, in
//! one run, at the same concurrency, over loopback.
//!
//! `cargo xtask bench http` (or `cargo bench -p production-agent --bench http`).
//! Both servers run in this process on a multi-threaded runtime; the load
//! generator keeps `CONCURRENCY` requests in flight for `SECONDS` each.
//!
//! * `bare_axum`: a handler that parses the same JSON body and answers JSON;
//! * `agent_message`: `POST /v1/conversations/{id}/messages` on the full stack
//!   (auth, per-user rate limit, reducer run by a Store, offline LLM with a
//!   tool call, audit, tracing layer, metrics);
//! * `agent_read`: `GET /v1/conversations/{id}` on the full stack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use production_agent::App;
use production_agent::config::Config;
use serde_json::{Value, json};

/// The server binary's allocator, so both servers are measured as shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "bench-user-key-1";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

struct Result {
    requests: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

async fn load(
    client: reqwest::Client,
    make: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
    concurrency: u64,
    seconds: u64,
) -> Result {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, make) = (client.clone(), Arc::clone(&make));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let response = make(&client).send().await.unwrap();
                    assert!(
                        response.status().is_success(),
                        "status {}",
                        response.status()
                    );
                    response.bytes().await.unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Result {
        requests: all.len() as u64,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn report(name: &str, r: &Result, anchor: Option<f64>) -> f64 {
    let rps = r.requests as f64 / r.elapsed.as_secs_f64();
    let ratio = anchor
        .map(|a| format!("{:.0}% of anchor", 100.0 * rps / a))
        .unwrap_or_default();
    println!(
        "{name:<16} {rps:>10.0} req/s   p50 {:>8.1} µs   p99 {:>8.1} µs   {ratio}",
        r.p50.as_secs_f64() * 1e6,
        r.p99.as_secs_f64() * 1e6
    );
    rps
}

fn main() {
    let concurrency = env_or("BENCH_CONCURRENCY", 32);
    let seconds = env_or("BENCH_SECONDS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let bare = axum::Router::new().route(
            "/echo",
            post(|Json(body): Json<Value>| async move {
                Json(json!({"reply": body["content"], "ok": true}))
            }),
        );
        let bare_url = serve(bare).await;

        let mut config = Config {
            api_keys: vec![format!("bench:user:{KEY}")],
            ..Config::default()
        };
        config.llm.provider = "offline".into();
        config.user_rate_limit.capacity = 1_000_000_000;
        config.user_rate_limit.refill_rate = 1e9;
        config.llm.burst = 1_000_000_000;
        config.llm.rate_per_second = 1e9;
        config.agent.max_messages = 40;
        let app = App::build(config).await.unwrap();
        let agent_url = serve(app.router()).await;

        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency as usize)
            .build()
            .unwrap();
        let id: String = client
            .post(format!("{agent_url}/v1/conversations"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();

        println!("concurrency {concurrency}, {seconds} s per run, loopback, one process");
        let url = format!("{bare_url}/echo");
        let bare = load(
            client.clone(),
            Arc::new(move |c: &reqwest::Client| {
                c.post(&url).json(&json!({"content": "What is 6 * 7?"}))
            }),
            concurrency,
            seconds,
        )
        .await;
        let anchor = report("bare_axum", &bare, None);

        // Each message takes the conversation's lock, so spread the load over
        // as many conversations as there are workers.
        let mut ids = Vec::new();
        for _ in 0..concurrency {
            let v: Value = client
                .post(format!("{agent_url}/v1/conversations"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids.push(v["id"].as_str().unwrap().to_owned());
        }
        let ids = Arc::new(ids);
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let base = agent_url.clone();
        let message = load(
            client.clone(),
            Arc::new(move |c: &reqwest::Client| {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = &ids[n % ids.len()];
                c.post(format!("{base}/v1/conversations/{id}/messages"))
                    .bearer_auth(KEY)
                    .json(&json!({"content": "What is 6 * 7?"}))
            }),
            concurrency,
            seconds,
        )
        .await;
        report("agent_message", &message, Some(anchor));

        let url = format!("{agent_url}/v1/conversations/{id}");
        let read = load(
            client.clone(),
            Arc::new(move |c: &reqwest::Client| c.get(&url).bearer_auth(KEY)),
            concurrency,
            seconds,
        )
        .await;
        report("agent_read", &read, Some(anchor));
    });
}
