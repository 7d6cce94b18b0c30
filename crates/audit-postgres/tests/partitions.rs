//! Monthly partitions: events land in their month, a month without a
//! partition falls back to the default one, and retention drops whole months
//! while rows stay append-only and the rest of the chain stays verifiable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agent_patterns_audit::{AuditEvent, AuditEventType, AuditLogger, VerifyRange};
use agent_patterns_audit_postgres::PostgresAuditLogger;
use chrono::{TimeZone, Utc};
use common::TestDb;
use sqlx::PgConnection;

fn event_at(action: &str, year: i32, month: u32) -> AuditEvent {
    let mut event = AuditEvent::new(AuditEventType::DataAccess, "alice", action, true);
    event.timestamp = Utc.with_ymd_and_hms(year, month, 15, 12, 0, 0).unwrap();
    event
}

async fn partition_of(su: &mut PgConnection, action: &str) -> String {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM audit_events WHERE action = $1")
        .bind(action)
        .fetch_one(su)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_their_month_or_in_the_default_partition() {
    let db = TestDb::new().await;
    let store = PostgresAuditLogger::connect(&db.url).await.unwrap();
    store
        .log(AuditEvent::new(
            AuditEventType::DataAccess,
            "alice",
            "now",
            true,
        ))
        .await
        .unwrap();
    store.log(event_at("long-ago", 2019, 6)).await.unwrap();

    let mut su = db.superuser().await;
    let this_month = format!("audit_events_{}", Utc::now().format("%Y_%m"));
    assert_eq!(partition_of(&mut su, "now").await, this_month);
    assert_eq!(
        partition_of(&mut su, "long-ago").await,
        "audit_events_default"
    );
    // The current month and the two after it are ready.
    let months: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_events'::regclass AND c.relname <> 'audit_events_default'",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert!(months >= 3, "{months} monthly partitions");
    // Running the maintenance again creates nothing new.
    let created: i32 = sqlx::query_scalar("SELECT audit_ensure_partitions(2)")
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(created, 0);
    assert!(store.verify(VerifyRange::all()).await.unwrap().is_valid());

    store.close().await.unwrap();
    store.pool().close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_a_month_and_the_rest_of_the_chain_still_verifies() {
    let db = TestDb::new().await;
    let store = PostgresAuditLogger::connect(&db.url).await.unwrap();
    let mut su = db.superuser().await;
    sqlx::query(
        "CREATE TABLE audit_events_2020_01 PARTITION OF audit_events \
         FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-02-01 00:00:00+00')",
    )
    .execute(&mut su)
    .await
    .unwrap();
    for i in 1..=5 {
        store
            .log(event_at(&format!("old-{i}"), 2020, 1))
            .await
            .unwrap();
    }
    for i in 6..=10 {
        store
            .log(AuditEvent::new(
                AuditEventType::DataAccess,
                "alice",
                format!("new-{i}"),
                true,
            ))
            .await
            .unwrap();
    }
    assert_eq!(partition_of(&mut su, "old-3").await, "audit_events_2020_01");

    // Rows stay append-only, in every partition.
    let this_month = format!("audit_events_{}", Utc::now().format("%Y_%m"));
    for statement in [
        "DELETE FROM audit_events WHERE action = 'new-7'".to_owned(),
        "UPDATE audit_events SET action = 'x' WHERE action = 'old-2'".to_owned(),
        "TRUNCATE audit_events".to_owned(),
        format!("TRUNCATE {this_month}"),
    ] {
        let err = sqlx::query(&statement).execute(&mut su).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }

    // Retention: the owner drops the whole month.
    sqlx::query("DROP TABLE audit_events_2020_01")
        .execute(&mut su)
        .await
        .unwrap();
    assert_eq!(store.count().await, 5);
    // From the start, the dropped events are reported missing...
    assert!(!store.verify(VerifyRange::all()).await.unwrap().is_valid());
    // ...from the first retained one, the chain is whole.
    let retained = store
        .verify(VerifyRange {
            from: Some(6),
            to: None,
        })
        .await
        .unwrap();
    assert!(retained.is_valid(), "{retained:?}");
    assert_eq!(retained.checked, 5);

    store.close().await.unwrap();
    store.pool().close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_migrations_keep_the_events_of_an_existing_trail() {
    use agent_patterns_audit::ChainHead;
    use agent_patterns_audit_postgres::MIGRATOR;
    let db = TestDb::new().await;
    // The trail as the first schema version held it, written the way its
    // writer did: rows chained in order and the head row moved along.
    let pool = db.pool(4).await;
    let first_version = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(vec![MIGRATOR.migrations[0].clone()]),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    first_version.run(&pool).await.unwrap();
    let mut head = ChainHead::EMPTY;
    for i in 1..=5 {
        let event = AuditEvent::new(
            AuditEventType::Configuration,
            "ops",
            format!("change-{i}"),
            true,
        )
        .with_metadata("ticket", format!("OPS-{i}"));
        insert_chained(&pool, &mut head, event).await;
    }
    sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2")
        .bind(5i64)
        .bind(head.hash.as_bytes().as_slice())
        .execute(&pool)
        .await
        .unwrap();

    // Upgrading moves them into the partitioned table and the head into the
    // chain links; the chain goes on.
    let store = PostgresAuditLogger::from_pool(pool).await.unwrap();
    assert_eq!(store.count().await, 5);
    assert_eq!(store.head().await.unwrap(), head);
    store
        .log(AuditEvent::new(
            AuditEventType::Configuration,
            "ops",
            "change-6",
            true,
        ))
        .await
        .unwrap();
    let report = store.verify(VerifyRange::all()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 6);
    let mut su = db.superuser().await;
    let this_month = format!("audit_events_{}", Utc::now().format("%Y_%m"));
    assert_eq!(partition_of(&mut su, "change-1").await, this_month);

    store.close().await.unwrap();
    store.pool().close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_links_migration_refuses_a_head_that_lags_behind_the_events() {
    use agent_patterns_audit::ChainHead;
    use agent_patterns_audit_postgres::MIGRATOR;
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    // The first two schema versions, then two chained events whose head row
    // was left at the first (as if the migration had raced a writer).
    let earlier = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(MIGRATOR.migrations[..2].to_vec()),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    earlier.run(&pool).await.unwrap();
    let mut head = ChainHead::EMPTY;
    let mut first = None;
    for i in 1..=2 {
        let event = AuditEvent::new(AuditEventType::Configuration, "ops", format!("c{i}"), true);
        insert_chained(&pool, &mut head, event).await;
        first.get_or_insert(head);
    }
    let lagging = first.unwrap();
    sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2")
        .bind(i64::try_from(lagging.sequence).unwrap())
        .bind(lagging.hash.as_bytes().as_slice())
        .execute(&pool)
        .await
        .unwrap();
    let err = PostgresAuditLogger::migrate(&pool).await.unwrap_err();
    assert!(
        err.to_string().contains("does not match the newest event"),
        "{err}"
    );
    // Nothing of the migration stayed: the head row is still there.
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_chain_head")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(seq, 1);
    pool.close().await;
    db.drop_db().await;
}

/// Chains `event` onto `head` and inserts it the way the writer of the first
/// schema versions did (a plain row; the head row is the caller's to move).
async fn insert_chained(
    pool: &sqlx::PgPool,
    head: &mut agent_patterns_audit::ChainHead,
    mut event: AuditEvent,
) {
    let link = head.append(&mut event);
    sqlx::query(
        "INSERT INTO audit_events (seq, id, ts, event_type, actor, action, success, \
         metadata, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(i64::try_from(link.sequence).unwrap())
    .bind(event.id)
    .bind(event.timestamp)
    .bind(event.event_type.as_str())
    .bind(&event.actor)
    .bind(&event.action)
    .bind(event.success)
    .bind(sqlx::types::Json(&event.metadata))
    .bind(link.prev_hash.as_bytes().as_slice())
    .bind(link.hash.as_bytes().as_slice())
    .execute(pool)
    .await
    .unwrap();
}
