//! Rewriting history in the database is refused, and when forced by a
//! superuser, `verify()` names the first bad event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agent_patterns_audit::{AuditEvent, AuditEventType, AuditLogger, ChainFaultKind, VerifyRange};
use agent_patterns_audit_postgres::PostgresAuditLogger;
use common::TestDb;
use sqlx::PgConnection;

/// A store holding ten events (sequences 1..=10), and a superuser connection
/// with the append-only triggers switched off.
async fn store_with_ten_events() -> (TestDb, PostgresAuditLogger, PgConnection) {
    let db = TestDb::new().await;
    let store = PostgresAuditLogger::connect(&db.url).await.unwrap();
    for i in 1..=10 {
        let event = AuditEvent::new(
            AuditEventType::DataAccess,
            "alice",
            format!("read-{i}"),
            true,
        );
        store.log(event).await.unwrap();
    }
    assert!(store.verify(VerifyRange::all()).await.unwrap().is_valid());
    let mut su = db.superuser().await;
    sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER USER")
        .execute(&mut su)
        .await
        .unwrap();
    (db, store, su)
}

async fn id_at(su: &mut PgConnection, seq: i64) -> uuid::Uuid {
    sqlx::query_scalar("SELECT id FROM audit_events WHERE seq = $1")
        .bind(seq)
        .fetch_one(su)
        .await
        .unwrap()
}

async fn finish(db: TestDb, store: PostgresAuditLogger) {
    store.close().await.unwrap();
    store.pool().close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_action_is_reported_at_that_event() {
    let (db, store, mut su) = store_with_ten_events().await;
    let id = id_at(&mut su, 4).await;
    sqlx::query("UPDATE audit_events SET action = 'nothing-to-see' WHERE seq = 4")
        .execute(&mut su)
        .await
        .unwrap();
    let fault = store
        .verify(VerifyRange::all())
        .await
        .unwrap()
        .fault
        .unwrap();
    assert_eq!(
        (fault.sequence, fault.id, fault.kind),
        (4, Some(id), ChainFaultKind::Altered)
    );
    // Ranges before the change still verify.
    assert!(
        store
            .verify(VerifyRange::between(1, 3))
            .await
            .unwrap()
            .is_valid()
    );
    finish(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_row_is_reported_as_missing() {
    let (db, store, mut su) = store_with_ten_events().await;
    let next = id_at(&mut su, 6).await;
    sqlx::query("DELETE FROM audit_events WHERE seq = 5")
        .execute(&mut su)
        .await
        .unwrap();
    let fault = store
        .verify(VerifyRange::all())
        .await
        .unwrap()
        .fault
        .unwrap();
    assert_eq!(fault.kind, ChainFaultKind::Missing { expected: 5 });
    assert_eq!((fault.sequence, fault.id), (6, Some(next)));
    finish(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_first_and_last_rows_are_caught() {
    let (db, store, mut su) = store_with_ten_events().await;
    sqlx::query("DELETE FROM audit_events WHERE seq IN (1, 10)")
        .execute(&mut su)
        .await
        .unwrap();
    let fault = store
        .verify(VerifyRange::all())
        .await
        .unwrap()
        .fault
        .unwrap();
    assert_eq!(
        (fault.sequence, fault.kind),
        (2, ChainFaultKind::Missing { expected: 1 })
    );
    let fault = store
        .verify(VerifyRange {
            from: Some(2),
            to: None,
        })
        .await
        .unwrap()
        .fault
        .unwrap();
    assert_eq!(
        (fault.sequence, fault.kind),
        (9, ChainFaultKind::Truncated { head: 10 })
    );
    finish(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_rows_are_reported_at_the_first_position() {
    let (db, store, mut su) = store_with_ten_events().await;
    let moved_in = id_at(&mut su, 7).await;
    for sql in [
        "UPDATE audit_events SET seq = 1000 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 7",
        "UPDATE audit_events SET seq = 7 WHERE seq = 1000",
    ] {
        sqlx::query(sql).execute(&mut su).await.unwrap();
    }
    let fault = store
        .verify(VerifyRange::all())
        .await
        .unwrap()
        .fault
        .unwrap();
    assert_eq!(
        (fault.sequence, fault.id, fault.kind),
        (3, Some(moved_in), ChainFaultKind::Altered)
    );
    finish(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_delete_and_truncate_are_refused_even_to_the_owner() {
    let db = TestDb::new().await;
    let store = PostgresAuditLogger::connect(&db.url).await.unwrap();
    store
        .log(AuditEvent::new(
            AuditEventType::Security,
            "bob",
            "login",
            false,
        ))
        .await
        .unwrap();
    let mut su = db.superuser().await;
    for sql in [
        "UPDATE audit_events SET success = true",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_chain_links SET last_seq = 0",
        "DELETE FROM audit_chain_links",
        "TRUNCATE audit_chain_links",
    ] {
        let err = sqlx::query(sql).execute(&mut su).await.unwrap_err();
        assert!(
            err.to_string().contains("rejected"),
            "{sql} should be rejected by the trigger, got {err}"
        );
    }
    assert_eq!(store.count().await, 1);
    finish(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_role_can_append_and_read_but_not_update() {
    let db = TestDb::new().await;
    let role = format!("audit_writer_{}", uuid::Uuid::now_v7().simple());
    let mut su = db.superuser().await;
    PostgresAuditLogger::migrate(&db.pool(1).await)
        .await
        .unwrap();
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT SELECT, INSERT ON audit_events TO {role}"),
        format!("GRANT SELECT, INSERT ON audit_chain_links TO {role}"),
        format!("GRANT EXECUTE ON FUNCTION audit_prune_chain_links(integer) TO {role}"),
    ] {
        sqlx::query(&sql).execute(&mut su).await.unwrap();
    }
    let writer_url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let config = agent_patterns_audit_postgres::PostgresAuditConfig {
        run_migrations: false,
        ..Default::default()
    };
    let store = PostgresAuditLogger::connect_with(&writer_url, config)
        .await
        .unwrap();
    store
        .log(AuditEvent::new(
            AuditEventType::Configuration,
            "ops",
            "set",
            true,
        ))
        .await
        .unwrap();
    assert_eq!(store.get_recent_events(10).await.unwrap().len(), 1);

    let err = sqlx::query("UPDATE audit_events SET action = 'other'")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    let err = sqlx::query("DELETE FROM audit_events")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    for sql in [
        "UPDATE audit_chain_links SET last_seq = 0",
        "DELETE FROM audit_chain_links",
    ] {
        let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{sql}: {err}"
        );
    }
    // Pruning goes through the function, which always keeps the newest link.
    let pruned: i64 = sqlx::query_scalar("SELECT audit_prune_chain_links(1)")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(pruned, 1, "the genesis link goes, the head's stays");
    store
        .log(AuditEvent::new(
            AuditEventType::Configuration,
            "ops",
            "set again",
            true,
        ))
        .await
        .unwrap();
    assert_eq!(store.count().await, 2);
    assert!(store.verify(VerifyRange::all()).await.unwrap().is_valid());

    store.close().await.unwrap();
    store.pool().close().await;
    drop(su);
    db.drop_db().await;
    let mut admin = sqlx::Connection::connect(&common::admin_url())
        .await
        .map(|c: PgConnection| c)
        .unwrap();
    sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
}
