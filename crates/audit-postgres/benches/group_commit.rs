//! Events per second and `log()` latency with 1, 16 and 64 concurrent loggers:
//! this store (durable group commit, hash chain) against two anchors on the
//! same database in the same run:
//!
//! * naive: one `INSERT` (one commit) per event, one connection per logger;
//! * raw COPY: `COPY … FROM STDIN (FORMAT binary)` of the same rows, in the
//!   order the loggers produce them together, in 1,000-row chunks, no chain,
//!   no per-event acknowledgement: the practical ceiling of this machine.
//!
//! A fourth line shows raw COPY in the store's shape: commits of `loggers ÷
//! batches in flight` rows on as many streams as the store keeps batches in
//! flight. That is what a store acknowledging every event could reach with
//! no chain and no other cost than the rows' own, so it shows how much of the
//! gap to the 1,000-row COPY is the commit size the loggers allow, and how
//! much is the store's own work.
//!
//! The four are measured in turns, `AUDIT_BENCH_ROUNDS` rounds (default 4)
//! of a slice of the cell's time each, so a machine whose speed drifts over
//! minutes (shared disks, noisy neighbours) weighs on every line alike.
//!
//! Run with `cargo bench -p agent-patterns-audit-postgres --bench group_commit`.
//! `AUDIT_BENCH_SECS` sets the measuring time per cell (default 2);
//! `AUDIT_BENCH_LOGGERS` picks the logger counts (default `1,16,64`);
//! `AUDIT_BENCH_IN_FLIGHT` and `AUDIT_BENCH_LINGER_US` override the store's
//! batches in flight and linger. Needs the
//! PostgreSQL server of `DATABASE_URL`; creates and drops its own database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_patterns_audit::{AuditEvent, AuditEventType, AuditLogger};
use agent_patterns_audit_postgres::PostgresAuditLogger;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::{PgPoolCopyExt, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

const LOGGERS: [usize; 3] = [1, 16, 64];
const COPY_CHUNK: usize = 1_000;
/// COPY streams beyond this add nothing on two cores but connections.
const MAX_COPY_STREAMS: usize = 4;

const ANCHOR_TABLE: &str = "(seq BIGSERIAL PRIMARY KEY, id UUID NOT NULL UNIQUE, \
    ts TIMESTAMPTZ NOT NULL, event_type TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, \
    success BOOLEAN NOT NULL, session_id TEXT, source_ip TEXT, resource TEXT, \
    metadata JSONB NOT NULL DEFAULT '{}', prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL, \
    logged_at TIMESTAMPTZ NOT NULL DEFAULT now())";

fn event(logger: usize, i: usize) -> AuditEvent {
    AuditEvent::new(
        AuditEventType::LlmInteraction,
        format!("user-{logger}"),
        "send_message",
        true,
    )
    .with_session_id(format!("session-{logger}"))
    .with_source_ip("203.0.113.7")
    .with_resource(format!("conversation:{i}"))
    .with_metadata("model", "claude-sonnet-4")
    .with_metadata("message_length", "142")
}

struct Cell {
    events: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Cell {
    fn empty() -> Self {
        Self {
            events: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
        }
    }

    /// Adds the measurements of another round.
    fn add(&mut self, round: Cell) {
        self.events += round.events;
        self.elapsed += round.elapsed;
        self.latencies.extend(round.latencies);
        self.latencies.sort_unstable();
    }

    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Option<Duration> {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied()
    }

    fn line(&self, name: &str, loggers: usize) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
            )
        };
        format!(
            "{name:<10} loggers={loggers:<3} {:>9.0} events/s   p50 {:>9}   p99 {:>9}",
            self.rate(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
        )
    }
}

/// Runs `loggers` tasks for `secs`; each call of `op` writes `batch` events
/// and its latency is recorded per call.
async fn measure<F, Fut>(loggers: usize, secs: Duration, batch: usize, op: F) -> Cell
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let deadline = started + secs;
    let tasks: Vec<_> = (0..loggers)
        .map(|logger| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(logger, i).await;
                    latencies.push(t.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Cell {
        events: latencies.len() * batch,
        elapsed,
        latencies,
    }
}

async fn naive_insert(pool: &PgPool, event: &AuditEvent) {
    sqlx::query(
        "INSERT INTO naive_events (id, ts, event_type, actor, action, success, session_id, \
         source_ip, resource, metadata, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(event.id)
    .bind(event.timestamp)
    .bind(event.event_type.as_str())
    .bind(&event.actor)
    .bind(&event.action)
    .bind(event.success)
    .bind(&event.session_id)
    .bind(&event.source_ip)
    .bind(&event.resource)
    .bind(sqlx::types::Json(&event.metadata))
    .bind([0u8; 32].as_slice())
    .bind([0u8; 32].as_slice())
    .execute(pool)
    .await
    .unwrap();
}

/// PostgreSQL's binary COPY format, for the COPY anchor: rows `start ..
/// start + rows` of the stream the loggers produce together, event `i`
/// of logger `l` being row `i × loggers + l`. The rows and their order are
/// those the store and the naive store receive (the actors interleaved), not
/// one logger's run of a single actor, whose index inserts would all land on
/// the same few pages.
fn copy_chunk(loggers: usize, start: usize, rows: usize) -> Vec<u8> {
    let pg_epoch: DateTime<Utc> = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    let mut out = Vec::with_capacity(rows * 300);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    for row in start..start + rows {
        let e = event(row % loggers, row / loggers);
        out.extend_from_slice(&12i16.to_be_bytes());
        field(&mut out, e.id.as_bytes());
        let micros = (e.timestamp - pg_epoch).num_microseconds().unwrap();
        field(&mut out, &micros.to_be_bytes());
        field(&mut out, e.event_type.as_str().as_bytes());
        field(&mut out, e.actor.as_bytes());
        field(&mut out, e.action.as_bytes());
        field(&mut out, &[u8::from(e.success)]);
        for text in [&e.session_id, &e.source_ip, &e.resource] {
            match text {
                Some(t) => field(&mut out, t.as_bytes()),
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let mut jsonb = vec![1u8];
        jsonb.extend_from_slice(serde_json::to_string(&e.metadata).unwrap().as_bytes());
        field(&mut out, &jsonb);
        field(&mut out, &[0u8; 32]);
        field(&mut out, &[0u8; 32]);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

async fn copy_rows(pool: &PgPool, loggers: usize, start: usize, rows: usize) {
    let chunk = copy_chunk(loggers, start, rows);
    let mut copy = pool
        .copy_in_raw(
            "COPY copy_events (id, ts, event_type, actor, action, success, session_id, \
             source_ip, resource, metadata, prev_hash, hash) FROM STDIN (FORMAT binary)",
        )
        .await
        .unwrap();
    copy.send(chunk).await.unwrap();
    copy.finish().await.unwrap();
}

/// Raw COPY of `rows`-row chunks on `streams` streams for `secs`.
async fn copy_cell(
    pool: &PgPool,
    loggers: usize,
    secs: Duration,
    streams: usize,
    rows: usize,
) -> Cell {
    let p = pool.clone();
    measure(streams, secs, rows, move |stream, i| {
        let p = p.clone();
        // Stream `s` copies chunks s, s + streams, s + 2 × streams …
        async move { copy_rows(&p, loggers, (i * streams + stream) * rows, rows).await }
    })
    .await
}

async fn reset_anchor_tables(db: &PgPool) {
    for table in ["naive_events", "copy_events"] {
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(db)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE TABLE {table} {ANCHOR_TABLE}"))
            .execute(db)
            .await
            .unwrap();
        for (name, columns) in [
            ("actor", "(actor, seq DESC)"),
            ("type", "(event_type, seq DESC)"),
        ] {
            sqlx::query(&format!("CREATE INDEX {table}_{name} ON {table} {columns}"))
                .execute(db)
                .await
                .unwrap();
        }
        sqlx::query(&format!(
            "CREATE INDEX {table}_ts ON {table} USING brin (ts)"
        ))
        .execute(db)
        .await
        .unwrap();
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do
    // nothing then (and for nextest's `--list`).
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let secs = Duration::from_secs_f64(
        std::env::var("AUDIT_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("audit_bench_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);

    // `AUDIT_BENCH_IN_FLIGHT` overrides the store's batches in flight.
    let mut config = agent_patterns_audit_postgres::PostgresAuditConfig::default();
    if let Some(n) = std::env::var("AUDIT_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        config.max_in_flight_batches = n;
        config.max_connections = config.max_connections.max(u32::try_from(n).unwrap() + 1);
    }
    // `AUDIT_BENCH_LINGER_US` overrides the store's linger (microseconds).
    if let Some(us) = std::env::var("AUDIT_BENCH_LINGER_US")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        config.linger = Duration::from_micros(us);
    }
    let in_flight = config.max_in_flight_batches.max(1);
    let rounds: u32 = std::env::var("AUDIT_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(4);
    let slice = secs / rounds;
    let store = Arc::new(
        PostgresAuditLogger::connect_with(&url, config)
            .await
            .unwrap(),
    );
    let pool = PgPoolOptions::new()
        .max_connections(64)
        .connect(&url)
        .await
        .unwrap();
    reset_anchor_tables(&pool).await;

    println!("audit group commit, {secs:?} per cell in {rounds} rounds, database {name}");
    let mut at_64 = Vec::new();
    // `AUDIT_BENCH_LOGGERS=64` (or `1,64`) measures only those columns.
    let columns: Vec<usize> = std::env::var("AUDIT_BENCH_LOGGERS")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .filter(|&n: &usize| n > 0)
                .collect()
        })
        .unwrap_or_else(|| LOGGERS.to_vec());
    for loggers in columns {
        let copy_streams = loggers.min(MAX_COPY_STREAMS);
        let shaped_streams = in_flight.min(loggers);
        let shaped_rows = loggers.div_ceil(shaped_streams);
        let (mut ours, mut naive, mut copy, mut shaped) =
            (Cell::empty(), Cell::empty(), Cell::empty(), Cell::empty());
        for _ in 0..rounds {
            let s = Arc::clone(&store);
            ours.add(
                measure(loggers, slice, 1, move |logger, i| {
                    let s = Arc::clone(&s);
                    async move { s.log(event(logger, i)).await.unwrap() }
                })
                .await,
            );
            let p = pool.clone();
            naive.add(
                measure(loggers, slice, 1, move |logger, i| {
                    let p = p.clone();
                    async move { naive_insert(&p, &event(logger, i)).await }
                })
                .await,
            );
            copy.add(copy_cell(&pool, loggers, slice, copy_streams, COPY_CHUNK).await);
            shaped.add(copy_cell(&pool, loggers, slice, shaped_streams, shaped_rows).await);
        }
        println!("{}", ours.line("store", loggers));
        println!("{}", naive.line("naive", loggers));
        println!(
            "{}   (latency per {COPY_CHUNK}-row COPY, {copy_streams} streams)",
            copy.line("raw COPY", loggers)
        );
        println!(
            "{}   (latency per {shaped_rows}-row COPY, {shaped_streams} streams: the store's shape)",
            shaped.line("COPY/shape", loggers)
        );
        if loggers == 64 {
            at_64 = vec![ours.rate(), naive.rate(), copy.rate(), shaped.rate()];
        }
    }
    if let [ours, naive, copy, shaped] = at_64[..] {
        println!(
            "64 loggers: store / naive = {:.1}x (goal >= 5x); store / raw COPY = {:.0}% (goal >= 50%); \
             COPY in the store's shape / raw COPY = {:.0}%; store / COPY in its shape = {:.0}%",
            ours / naive,
            100.0 * ours / copy,
            100.0 * shaped / copy,
            100.0 * ours / shaped
        );
    }
    let report = store
        .verify(agent_patterns_audit::VerifyRange::all())
        .await
        .unwrap();
    println!(
        "chain after the run: {} events, valid = {}",
        report.checked,
        report.is_valid()
    );

    store.close().await.unwrap();
    store.pool().close().await;
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
