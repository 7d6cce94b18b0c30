//! The guide's "Health Checks & Liveness" code, with only the glob import of
//! this crate (the facade's `health` module) and std/axum/sqlx items.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::str::FromStr;

use agent_patterns_health::*;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

struct DatabaseHealthCheck {
    pool: PgPool,
}

impl DatabaseHealthCheck {
    fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl HealthCheckable for DatabaseHealthCheck {
    async fn check_health(&self) -> ComponentHealth {
        match self.pool.acquire().await {
            Ok(_) => ComponentHealth::healthy("Database connected"),
            Err(e) => ComponentHealth::unhealthy(format!("DB error: {}", e)),
        }
    }

    fn component_name(&self) -> &str {
        "database"
    }
}

struct LlmClient;

impl LlmClient {
    async fn ping(&self) -> Result<(), String> {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(())
    }
}

struct LLMHealthCheck {
    client: LlmClient,
}

impl LLMHealthCheck {
    fn new(client: LlmClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl HealthCheckable for LLMHealthCheck {
    async fn check_health(&self) -> ComponentHealth {
        match tokio::time::timeout(Duration::from_secs(5), self.client.ping()).await {
            Ok(Ok(_)) => ComponentHealth::healthy("LLM service reachable"),
            Ok(Err(e)) => ComponentHealth::unhealthy(format!("LLM error: {}", e)),
            Err(_) => ComponentHealth::unhealthy("LLM timeout"),
        }
    }

    fn component_name(&self) -> &str {
        "llm_service"
    }
}

#[derive(Clone)]
struct ServerState {
    health_registry: Arc<SystemHealthCheck>,
}

async fn liveness_handler() -> Response {
    // Process is alive
    (StatusCode::OK, "alive").into_response()
}

async fn readiness_handler(state: ServerState) -> Response {
    let results = state.health_registry.check_all().await;
    let all_ready = results.values().all(|h| h.status == HealthStatus::Healthy);

    if all_ready {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

#[tokio::test(start_paused = true)]
async fn guide_health_code_compiles_and_behaves_as_described() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(sqlx::postgres::PgConnectOptions::from_str(&url).unwrap());
    let client = LlmClient;

    let mut system_health = SystemHealthCheck::new();

    // Register components
    system_health.add_check(Arc::new(DatabaseHealthCheck::new(pool)));
    system_health.add_check(Arc::new(LLMHealthCheck::new(client)));

    // Check all components (runs in parallel)
    let results: HashMap<String, ComponentHealth> = system_health.check_all().await;

    // Overall health status
    let status = system_health.overall_health().await;

    // The LLM ping takes 10 s: the guide's own 5 s timeout is cut by the
    // system's 2 s default per-check timeout.
    assert_eq!(results.len(), 2);
    assert_eq!(results["llm_service"].status, HealthStatus::Unhealthy);
    assert!(results["llm_service"].message.contains("timed out"));
    assert_eq!(status, HealthStatus::Unhealthy);

    let state = ServerState {
        health_registry: Arc::new(system_health),
    };
    assert_eq!(liveness_handler().await.status(), StatusCode::OK);
    assert_eq!(
        readiness_handler(state).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}
