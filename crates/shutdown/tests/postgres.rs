//! `DatabaseShutdownHandler` against the real server (`DATABASE_URL`).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use agent_patterns_shutdown::*;
use sqlx::Executor;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[tokio::test]
async fn database_handler_closes_the_pool_in_the_last_phase() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin_options = PgConnectOptions::from_str(&url).unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin_options.clone())
        .await
        .unwrap();
    let name = format!("shutdown_test_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(admin_options.database(&name))
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();

    let shutdown = Arc::new(ShutdownCoordinator::new(Duration::from_secs(30)));
    shutdown.register(Arc::new(DatabaseShutdownHandler::new(pool.clone())));
    let report = shutdown.shutdown().await.unwrap();

    let entry = report.handler("database").unwrap();
    assert_eq!(entry.phase, ShutdownPhase::CloseResources);
    assert!(pool.is_closed());
    assert!(sqlx::query("SELECT 1").execute(&pool).await.is_err());

    admin
        .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
        .await
        .unwrap();
}
