//! The shared store behaviour suite, each check on its own fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agent_patterns_audit::conformance;
use agent_patterns_audit_postgres::PostgresAuditLogger;
use common::TestDb;

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let db = TestDb::new().await;
            let store = PostgresAuditLogger::connect(&db.url).await.unwrap();
            conformance::$check(&store).await;
            store.close().await.unwrap();
            store.pool().close().await;
            db.drop_db().await;
        }
    )*};
}

conformance_tests!(
    guide_calls,
    general_query,
    pagination_is_stable,
    redacts_secret_metadata,
    idempotent_by_event_id,
    chain_links_every_event,
    rejects_invalid_input,
);
