//! The guide's "Graceful Shutdown" code, with only the glob import of this
//! crate (the facade's `shutdown` module) and std/axum/tokio/tracing items.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use agent_patterns_shutdown::*;
use tracing::info;

struct RedisCache;

impl RedisCache {
    async fn flush(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

struct CacheShutdownHandler {
    cache: Arc<RedisCache>,
}

#[async_trait]
impl ShutdownHandler for CacheShutdownHandler {
    fn name(&self) -> &str {
        "redis_cache"
    }

    async fn shutdown(&self) -> Result<(), String> {
        info!("Flushing cache...");
        self.cache.flush().await.map_err(|e| e.to_string())?;
        info!("Cache flushed");
        Ok(())
    }
}

async fn guide_main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy_with(sqlx::postgres::PgConnectOptions::from_str(&url)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let server = ServerHandle::new();

    // Create coordinator with 30s timeout
    let shutdown = Arc::new(ShutdownCoordinator::new(Duration::from_secs(30)));

    // Register shutdown handlers
    shutdown.register(Arc::new(ServerShutdownHandler::new(server)));
    shutdown.register(Arc::new(DatabaseShutdownHandler::new(pool.clone())));
    shutdown.register(Arc::new(CacheShutdownHandler {
        cache: Arc::new(RedisCache),
    }));

    // Subscribe to shutdown signal
    let mut shutdown_rx = shutdown.subscribe();

    // Stands in for Ctrl+C, which the guide awaits after the server returns.
    let trigger = tokio::spawn({
        let shutdown = Arc::clone(&shutdown);
        async move { shutdown.shutdown().await }
    });

    // Use in axum server
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown_rx.recv().await;
        })
        .await?;

    // Initiate shutdown (broadcasts to all subscribers)
    shutdown.shutdown().await?;

    let report = trigger.await??;
    let names: Vec<_> = report.handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["http_server", IN_FLIGHT_TASKS, "redis_cache", "database"]
    );
    assert!(pool.is_closed());
    Ok(())
}

#[tokio::test]
async fn guide_shutdown_code_compiles_and_runs() {
    guide_main().await.unwrap();
}
