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
//! generator keeps `BENCH_CONCURRENCY` (32) requests in flight for
//! `BENCH_SECONDS` (5) per kind, split into `BENCH_ROUNDS` (10) rounds in which
//! the kinds take turns, so drift in a shared machine's speed affects the
//! anchor and the agent alike.
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

/// What one kind of request measured, over all its rounds.
#[derive(Default)]
struct Result {
    requests: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Result {
    fn add(&mut self, round: Result) {
        self.requests += round.requests;
        self.elapsed += round.elapsed;
        self.latencies.extend(round.latencies);
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        self.latencies
            .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

type MakeRequest = Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>;

async fn load(
    client: reqwest::Client,
    make: MakeRequest,
    concurrency: u64,
    duration: Duration,
) -> Result {
    let deadline = Instant::now() + duration;
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
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    Result {
        requests: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}

fn report(name: &str, r: &mut Result, anchor: Option<f64>) -> f64 {
    let rps = r.rate();
    let ratio = anchor
        .map(|a| format!("{:.0}% of anchor", 100.0 * rps / a))
        .unwrap_or_default();
    println!(
        "{name:<16} {rps:>10.0} req/s   p50 {:>8.1} µs   p99 {:>8.1} µs   {ratio}",
        r.percentile(0.50).as_secs_f64() * 1e6,
        r.percentile(0.99).as_secs_f64() * 1e6
    );
    rps
}

fn main() {
    let concurrency = env_or("BENCH_CONCURRENCY", 32);
    let seconds = env_or("BENCH_SECONDS", 5);
    let rounds = env_or("BENCH_ROUNDS", 10).max(1);
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
        let echo = format!("{bare_url}/echo");
        let read = format!("{agent_url}/v1/conversations/{id}");
        let kinds: [(&str, MakeRequest); 3] = [
            (
                "bare_axum",
                Arc::new(move |c: &reqwest::Client| {
                    c.post(&echo).json(&json!({"content": "What is 6 * 7?"}))
                }),
            ),
            (
                "agent_message",
                Arc::new(move |c: &reqwest::Client| {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let id = &ids[n % ids.len()];
                    c.post(format!("{base}/v1/conversations/{id}/messages"))
                        .bearer_auth(KEY)
                        .json(&json!({"content": "What is 6 * 7?"}))
                }),
            ),
            (
                "agent_read",
                Arc::new(move |c: &reqwest::Client| c.get(&read).bearer_auth(KEY)),
            ),
        ];

        // The kinds take turns in short rounds, so a slow or fast spell of a
        // shared machine falls on all of them alike.
        println!(
            "concurrency {concurrency}, {seconds} s per kind in {rounds} interleaved rounds, \
             loopback, one process"
        );
        let slice = Duration::from_secs_f64(seconds as f64 / rounds as f64);
        let mut results: Vec<Result> = kinds.iter().map(|_| Result::default()).collect();
        for _ in 0..rounds {
            for ((_, make), result) in kinds.iter().zip(&mut results) {
                result.add(load(client.clone(), Arc::clone(make), concurrency, slice).await);
            }
        }
        let mut results = results.into_iter();
        let mut bare = results.next().unwrap();
        let anchor = report(kinds[0].0, &mut bare, None);
        for ((name, _), mut result) in kinds.iter().skip(1).zip(results) {
            report(name, &mut result, Some(anchor));
        }
    });
}
