//! Outages: connections killed mid-write, the database refusing connections
//! for a while, a full queue, and shutdown. Whatever happens, an event whose
//! `log()` returned `Ok` is stored exactly once and the chain stays intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agent_patterns_audit::{AuditError, AuditEvent, AuditEventType, AuditLogger, VerifyRange};
use agent_patterns_audit_postgres::{PostgresAuditConfig, PostgresAuditLogger};
use common::TestDb;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

async fn admin() -> PgConnection {
    PgConnection::connect(&common::admin_url()).await.unwrap()
}

/// Terminates every backend connected to `db` (the store's connections).
async fn kill_connections(admin: &mut PgConnection, db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()) AS killed",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap()
}

async fn allow_connections(admin: &mut PgConnection, db: &str, allow: bool) {
    sqlx::query(&format!(
        "ALTER DATABASE {db} WITH ALLOW_CONNECTIONS {allow}"
    ))
    .execute(admin)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_killed_connections_and_an_outage_exactly_once() {
    const TASKS: usize = 50;
    const PER_TASK: usize = 200;
    let db = TestDb::new().await;
    let config = PostgresAuditConfig {
        log_timeout: Duration::from_secs(3),
        retry_initial_backoff: Duration::from_millis(5),
        retry_max_backoff: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(500),
        ..PostgresAuditConfig::default()
    };
    let store = Arc::new(
        PostgresAuditLogger::connect_with(&db.url, config)
            .await
            .unwrap(),
    );

    let loggers: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut outcomes = Vec::with_capacity(PER_TASK);
                for i in 0..PER_TASK {
                    let event = AuditEvent::new(
                        AuditEventType::DataAccess,
                        format!("task-{t}"),
                        format!("write-{i}"),
                        true,
                    );
                    let id = event.id;
                    outcomes.push((id, store.log(event).await));
                }
                outcomes
            })
        })
        .collect();

    // Kill the store's connections repeatedly while it writes, then make the
    // database refuse connections for a while (a restart, seen from outside).
    let mut admin = admin().await;
    let mut killed = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        killed += kill_connections(&mut admin, &db.name).await;
    }
    allow_connections(&mut admin, &db.name, false).await;
    killed += kill_connections(&mut admin, &db.name).await;
    let mut saw_unhealthy = false;
    for _ in 0..50 {
        let health = store.health().await;
        if !health.healthy {
            saw_unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    allow_connections(&mut admin, &db.name, true).await;
    assert!(killed > 0, "the store had connections to kill");
    assert!(saw_unhealthy, "health reports the outage");

    let mut acknowledged = HashSet::new();
    let mut failed = HashSet::new();
    for logger in loggers {
        for (id, outcome) in logger.await.unwrap() {
            match outcome {
                Ok(()) => assert!(acknowledged.insert(id)),
                Err(err) => {
                    assert!(
                        matches!(err, AuditError::Timeout(_) | AuditError::QueueFull { .. }),
                        "unexpected error {err:?}"
                    );
                    assert!(failed.insert(id));
                }
            }
        }
    }
    assert_eq!(acknowledged.len() + failed.len(), TASKS * PER_TASK);
    assert!(!acknowledged.is_empty());

    // Recovery: the store writes again and the chain continues.
    let after = AuditEvent::new(AuditEventType::Security, "probe", "after-outage", true);
    let after_id = after.id;
    store.log(after).await.unwrap();
    assert!(store.health().await.healthy);

    let mut conn = db.superuser().await;
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT id, count(*) FROM audit_events GROUP BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let stored: HashSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    assert!(
        rows.iter().all(|(_, n)| *n == 1),
        "no event is stored twice"
    );
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing",
        missing.len()
    );
    // Anything else stored was committed after its caller had given up with
    // an error; it is stored once like the rest.
    assert!(
        stored
            .iter()
            .all(|id| acknowledged.contains(id) || failed.contains(id) || *id == after_id)
    );

    let report = store.verify(VerifyRange::all()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, stored.len() as u64);

    store.close().await.unwrap();
    store.pool().close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_makes_callers_wait_then_fail_and_nothing_is_lost() {
    let db = TestDb::new().await;
    let config = PostgresAuditConfig {
        queue_capacity: 2,
        max_batch_size: 2,
        log_timeout: Duration::from_millis(300),
        ..PostgresAuditConfig::default()
    };
    let store = Arc::new(
        PostgresAuditLogger::connect_with(&db.url, config)
            .await
            .unwrap(),
    );

    // Lock the chain links: the writer blocks inside its transaction.
    let mut blocker = db.superuser().await;
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("LOCK TABLE audit_chain_links IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .log(AuditEvent::new(
                        AuditEventType::DataAccess,
                        "u",
                        format!("{i}"),
                        true,
                    ))
                    .await
            })
        })
        .collect();
    let mut queue_full = 0;
    let mut timed_out = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Err(AuditError::QueueFull { capacity: 2, .. }) => queue_full += 1,
            Err(AuditError::Timeout(_)) => timed_out += 1,
            other => panic!("no event can be acknowledged while the head is locked: {other:?}"),
        }
    }
    assert!(
        queue_full > 0,
        "callers beyond the queue's capacity are refused"
    );
    assert_eq!(queue_full + timed_out, 8);
    tx.rollback().await.unwrap();

    // Once the lock is gone the store works normally again.
    store
        .log(AuditEvent::new(
            AuditEventType::DataAccess,
            "u",
            "after",
            true,
        ))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let report = store.verify(VerifyRange::all()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    store.close().await.unwrap();
    store.pool().close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_accepted_events_and_refuses_new_ones() {
    let db = TestDb::new().await;
    let store = Arc::new(PostgresAuditLogger::connect(&db.url).await.unwrap());
    // Lock the chain links so accepted events pile up unwritten.
    let mut blocker = db.superuser().await;
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("LOCK TABLE audit_chain_links IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let pending: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .log(AuditEvent::new(
                        AuditEventType::DataAccess,
                        "u",
                        format!("{i}"),
                        true,
                    ))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.count().await, 0);

    let closing = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.close().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = store
        .log(AuditEvent::new(
            AuditEventType::DataAccess,
            "u",
            "late",
            true,
        ))
        .await;
    assert_eq!(refused, Err(AuditError::Closed));
    assert!(!closing.is_finished(), "close waits for the queue");
    tx.rollback().await.unwrap();

    closing.await.unwrap().unwrap();
    assert_eq!(
        store.count().await,
        20,
        "close returns once accepted events are committed"
    );
    for task in pending {
        task.await.unwrap().unwrap();
    }
    assert!(!store.health().await.healthy);
    store.pool().close().await;
    db.drop_db().await;
}
