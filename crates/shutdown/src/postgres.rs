//! Closing a PostgreSQL pool (feature `postgres`).

use async_trait::async_trait;
use sqlx::PgPool;

use crate::{ShutdownHandler, ShutdownPhase};

/// Closes an sqlx pool on shutdown: new acquires fail at once, and the call
/// waits until every checked-out connection is returned and closed. Runs in
/// [`ShutdownPhase::CloseResources`], after buffers that need the database
/// have been flushed.
#[derive(Debug, Clone)]
pub struct DatabaseShutdownHandler {
    pool: PgPool,
    name: String,
}

impl DatabaseShutdownHandler {
    /// A handler named `database` for `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            name: "database".to_owned(),
        }
    }

    /// Renames the handler (e.g. `audit_db`).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

#[async_trait]
impl ShutdownHandler for DatabaseShutdownHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn shutdown(&self) -> Result<(), String> {
        self.pool.close().await;
        Ok(())
    }

    fn phase(&self) -> ShutdownPhase {
        ShutdownPhase::CloseResources
    }
}
