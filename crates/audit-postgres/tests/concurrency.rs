//! Many concurrent loggers, two stores on one database: one gapless chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use agent_patterns_audit::{AuditEvent, AuditEventType, AuditLogger, VerifyRange};
use agent_patterns_audit_postgres::{PostgresAuditConfig, PostgresAuditLogger};
use common::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_loggers_times_a_thousand_events_make_one_valid_chain() {
    const TASKS: usize = 64;
    const PER_TASK: usize = 1_000;
    let db = TestDb::new().await;
    let config = PostgresAuditConfig {
        log_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    };
    let store = Arc::new(
        PostgresAuditLogger::connect_with(&db.url, config)
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let event = AuditEvent::new(
                        AuditEventType::DataAccess,
                        format!("task-{t}"),
                        format!("read-{i}"),
                        true,
                    );
                    store.log(event).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let mut conn = db.superuser().await;
    let (rows, distinct, max_seq): (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT id), max(seq) FROM audit_events")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((rows, distinct, max_seq), (64_000, 64_000, 64_000));
    assert_eq!(store.count().await, 64_000);
    assert_eq!(
        store.get_events_for_actor("task-7").await.unwrap().len(),
        PER_TASK
    );

    let report = store.verify(VerifyRange::all()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 64_000);
    store.close().await.unwrap();
    store.pool().close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_database_extend_one_chain() {
    let db = TestDb::new().await;
    // Three stores with their own pools and writers stand in for replicas.
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Arc::new(
            PostgresAuditLogger::connect(&db.url).await.unwrap(),
        ));
    }
    let tasks: Vec<_> = (0..24)
        .map(|t| {
            let store = Arc::clone(&replicas[t % 3]);
            tokio::spawn(async move {
                for i in 0..100 {
                    let event = AuditEvent::new(
                        AuditEventType::LlmInteraction,
                        format!("replica-{}", t % 3),
                        format!("call-{t}-{i}"),
                        true,
                    );
                    store.log(event).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for store in &replicas {
        assert_eq!(store.count().await, 2_400);
        assert_eq!(
            store.get_events_for_actor("replica-1").await.unwrap().len(),
            800
        );
    }
    let report = replicas[2].verify(VerifyRange::all()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 2_400);
    for store in &replicas {
        store.close().await.unwrap();
        store.pool().close().await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_logged_again_is_stored_once_and_the_chain_goes_on() {
    let db = TestDb::new().await;
    let store = PostgresAuditLogger::connect(&db.url).await.unwrap();
    let first = AuditEvent::new(AuditEventType::DataAccess, "alice", "read", true);
    store.log(first.clone()).await.unwrap();
    // The writer now knows the head and takes its one-statement path; the
    // repeated id sends it down the careful path, which skips the duplicate.
    store.log(first.clone()).await.unwrap();
    store
        .log(AuditEvent::new(
            AuditEventType::DataAccess,
            "alice",
            "write",
            true,
        ))
        .await
        .unwrap();
    // A repeat inside one batch is stored once too.
    let again = AuditEvent::new(AuditEventType::DataAccess, "bob", "read", true);
    let (a, b) = tokio::join!(store.log(again.clone()), store.log(again.clone()));
    a.unwrap();
    b.unwrap();
    assert_eq!(store.count().await, 3);
    let report = store.verify(VerifyRange::all()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 3);
    store.close().await.unwrap();
    store.pool().close().await;
    db.drop_db().await;
}
