//! The PostgreSQL check against the real server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), each test in its own
//! database.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use agent_patterns_health::*;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use tower::ServiceExt;

fn admin_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    PgConnectOptions::from_str(&url).unwrap()
}

/// A fresh database, dropped by [`TestDb::drop_db`].
struct TestDb {
    admin: PgPool,
    name: String,
    pool: PgPool,
}

impl TestDb {
    async fn create() -> Self {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(admin_options())
            .await
            .unwrap();
        let name = format!("health_test_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(admin_options().database(&name))
            .await
            .unwrap();
        Self { admin, name, pool }
    }

    async fn drop_db(self) {
        self.pool.close().await;
        self.admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name).as_str())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn postgres_check_is_healthy_against_the_real_server() {
    let db = TestDb::create().await;
    let check = PostgresHealthCheck::new(db.pool.clone());
    let health = check.check_health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{}", health.message);
    assert_eq!(check.component_name(), "database");
    db.drop_db().await;
}

#[tokio::test]
async fn postgres_check_is_unhealthy_quickly_against_a_closed_port() {
    // Bind and release a port so nothing listens on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(admin_options().host("127.0.0.1").port(port));
    let check = PostgresHealthCheck::new(pool)
        .with_name("closed")
        .with_timeout(Duration::from_millis(300));
    // Bounded well below the pool's 30 s acquire timeout.
    let health = tokio::time::timeout(Duration::from_secs(5), check.check_health())
        .await
        .expect("the check must not wait for the pool's acquire timeout");
    assert_eq!(health.status, HealthStatus::Unhealthy);
    assert!(
        health.message.starts_with("DB error:"),
        "{}",
        health.message
    );
}

#[tokio::test]
async fn readiness_route_reports_the_real_database_in_full_detail() {
    let db = TestDb::create().await;
    let mut system = SystemHealthCheck::with_config(HealthConfig {
        detail: DetailLevel::Full,
        ..HealthConfig::default()
    })
    .unwrap();
    system.add_check(Arc::new(
        PostgresHealthCheck::new(db.pool.clone()).with_name("primary_db"),
    ));
    let app: axum::Router = probe_routes(Arc::new(system));
    let response = app
        .oneshot(Request::get("/health/ready").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["status"], "pass");
    assert_eq!(body["checks"]["primary_db"][0]["status"], "pass");
    db.drop_db().await;
}
