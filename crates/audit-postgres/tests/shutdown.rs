//! The store as a shutdown handler (feature `shutdown`).
#![cfg(feature = "shutdown")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agent_patterns_audit::{AuditError, AuditEvent, AuditEventType, AuditLogger};
use agent_patterns_audit_postgres::PostgresAuditLogger;
use agent_patterns_shutdown::{ShutdownHandler, ShutdownPhase};
use common::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_handler_flushes_and_closes_the_store() {
    let db = TestDb::new().await;
    let store = PostgresAuditLogger::connect(&db.url).await.unwrap();
    store
        .log(AuditEvent::new(AuditEventType::Security, "u", "a", true))
        .await
        .unwrap();
    assert_eq!(store.name(), "audit_postgres");
    assert_eq!(store.phase(), ShutdownPhase::FlushBuffers);
    store.shutdown().await.unwrap();
    let late = store
        .log(AuditEvent::new(AuditEventType::Security, "u", "b", true))
        .await;
    assert_eq!(late, Err(AuditError::Closed));
    assert_eq!(store.count().await, 1);
    store.pool().close().await;
    db.drop_db().await;
}
