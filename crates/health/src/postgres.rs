//! The PostgreSQL check (feature `postgres`).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::{ComponentHealth, HealthCheckable};

/// Checks a PostgreSQL pool with `SELECT 1`, bounded by its own timeout.
///
/// The timeout covers acquiring a connection and the query, so an
/// unreachable server is reported within it even when the pool's
/// `acquire_timeout` is longer.
///
/// ```no_run
/// use std::sync::Arc;
/// use agent_patterns_health::*;
///
/// # async fn run() -> Result<(), sqlx::Error> {
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
/// let mut system_health = SystemHealthCheck::new();
/// system_health.add_check(Arc::new(PostgresHealthCheck::new(pool)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresHealthCheck {
    pool: PgPool,
    name: String,
    timeout: Duration,
}

impl PostgresHealthCheck {
    /// A check named `database` with a 1 s timeout.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            name: "database".to_owned(),
            timeout: Duration::from_secs(1),
        }
    }

    /// Renames the component (e.g. `audit_db`).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the timeout of the query, including acquiring a connection.
    /// A zero timeout is raised to 1 ms so the check can never report
    /// success without asking the server.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }
}

#[async_trait]
impl HealthCheckable for PostgresHealthCheck {
    async fn check_health(&self) -> ComponentHealth {
        let query = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool);
        match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(1)) => ComponentHealth::healthy("Database connected"),
            Ok(Ok(other)) => {
                ComponentHealth::unhealthy(format!("DB error: SELECT 1 returned {other}"))
            }
            Ok(Err(e)) => ComponentHealth::unhealthy(format!("DB error: {e}")),
            Err(_) => ComponentHealth::unhealthy(format!(
                "DB error: SELECT 1 timed out after {:?}",
                self.timeout
            )),
        }
    }

    fn component_name(&self) -> &str {
        &self.name
    }
}
