//! Graceful shutdown for AI agent services.
//!
//! * [`ShutdownCoordinator`]: runs [`ShutdownHandler`]s in ordered
//!   [`ShutdownPhase`]s (unready → stop accepting → drain in-flight work →
//!   flush buffers → close resources), concurrently within a phase, under one
//!   overall deadline plus a per-handler timeout. A handler that hangs,
//!   errors or panics is reported by name in the [`ShutdownReport`] and never
//!   holds the others past the deadline. [`shutdown`](ShutdownCoordinator::shutdown)
//!   is idempotent.
//! * [`ShutdownCoordinator::subscribe`]: a [`ShutdownSignal`] for
//!   `axum::serve(..).with_graceful_shutdown`.
//! * [`ShutdownCoordinator::task_tracker`]: in-flight background work the
//!   shutdown waits for (tokio-util's `TaskTracker`).
//! * [`wait_for_signal`]: SIGTERM or SIGINT.
//! * Provided handlers: [`ServerShutdownHandler`] (stop a server and wait for
//!   its requests), [`FnShutdownHandler`] (a closure), `DatabaseShutdownHandler` (feature `postgres`: close an
//!   sqlx pool), `ReadinessShutdownHandler` (feature `health`: turn the
//!   health crate's readiness probe to 503).
//!
//! # The Kubernetes sequence
//!
//! When Kubernetes stops a pod it sends SIGTERM and, in parallel, removes
//! the pod from the Service endpoints; the two race. The coordinator
//! therefore (1) turns readiness to 503 at once, (2) keeps serving for the
//! [drain delay](ShutdownConfig::drain_delay) so load balancers notice,
//! (3) stops accepting and finishes in-flight requests, (4) drains
//! background tasks, flushes buffers (e.g. the audit log) and closes pools.
//! The whole sequence takes at most `drain_delay + timeout`
//! ([`ShutdownConfig::max_duration`]); the pod's
//! `terminationGracePeriodSeconds` (default 30) must be larger, e.g.
//! `drain_delay` 5 s + `timeout` 30 s → a grace period of at least 40 s.
//!
//! This crate does not know what it stops: the health probes, servers and
//! pools are reached through handlers.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use agent_patterns_shutdown::*;
//!
//! struct AuditFlush;
//!
//! #[async_trait]
//! impl ShutdownHandler for AuditFlush {
//!     fn name(&self) -> &str {
//!         "audit_log"
//!     }
//!
//!     async fn shutdown(&self) -> Result<(), String> {
//!         Ok(()) // write buffered events here
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = Arc::new(ShutdownCoordinator::new(Duration::from_secs(30)));
//! shutdown.register(Arc::new(AuditFlush));
//!
//! // The server stops accepting when the coordinator says so.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let mut shutdown_rx = shutdown.subscribe();
//! let server = ServerHandle::new();
//! let serving = tokio::spawn(server.serve(
//!     axum::serve(listener, app).with_graceful_shutdown(async move {
//!         let _ = shutdown_rx.recv().await;
//!     }),
//! ));
//! shutdown.register(Arc::new(ServerShutdownHandler::new(server)));
//!
//! // Background work the shutdown waits for.
//! shutdown.spawn(async { /* summarise a conversation */ });
//!
//! // In production: `shutdown.shutdown_on_signal().await?` (SIGTERM/SIGINT).
//! let report = shutdown.shutdown().await?;
//! assert!(report.is_success());
//! assert!(serving.await?.is_ok());
//! let names: Vec<_> = report.handlers.iter().map(|h| h.name.as_str()).collect();
//! assert_eq!(names, ["http_server", IN_FLIGHT_TASKS, "audit_log"]);
//!
//! // A second call returns the same outcome without running anything again.
//! assert_eq!(shutdown.shutdown().await?, report);
//! # Ok(())
//! # }
//! ```

#[cfg(all(doctest, feature = "health"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod config;
mod coordinator;
mod fn_handler;
mod handler;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "health")]
mod readiness;
mod report;
mod server;
mod signal;

pub use config::ShutdownConfig;
pub use coordinator::{IN_FLIGHT_TASKS, ShutdownCoordinator, ShutdownSignal};
pub use fn_handler::FnShutdownHandler;
pub use handler::{ShutdownHandler, ShutdownPhase};
#[cfg(feature = "postgres")]
pub use postgres::DatabaseShutdownHandler;
#[cfg(feature = "health")]
pub use readiness::ReadinessShutdownHandler;
pub use report::{HandlerOutcome, HandlerReport, ShutdownError, ShutdownReport};
pub use server::{ServerHandle, ServerShutdownHandler};
pub use signal::{ReceivedSignal, SignalListener, wait_for_signal};

/// Re-exported so `#[async_trait]` resolves after `use agent_patterns_shutdown::*;`.
pub use async_trait::async_trait;

/// Re-exported so the guide's examples need no extra imports after the glob import.
pub use std::sync::Arc;
/// Re-exported so the guide's examples need no extra imports after the glob import.
pub use std::time::Duration;

/// The sqlx pool type `DatabaseShutdownHandler` takes (feature `postgres`).
#[cfg(feature = "postgres")]
pub use sqlx::PgPool;
