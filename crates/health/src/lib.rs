//! Health probes for AI agent services running under Kubernetes.
//!
//! * [`HealthCheckable`]: what a component (database, LLM client, cache)
//!   implements to report its [`ComponentHealth`].
//! * [`SystemHealthCheck`]: runs every check concurrently with a timeout
//!   (default 2 s), turns hangs and panics into unhealthy results, caches
//!   results for a TTL so probe traffic cannot hammer a dependency, and
//!   aggregates critical and non-critical checks into one [`HealthStatus`].
//! * [`probe_routes`]: the startup (`/health`), liveness (`/health/live`)
//!   and readiness (`/health/ready`) probes as axum routes, answering 200 or
//!   503 with an `application/health+json` body.
//! * [`ReadinessGate`]: the draining flag the shutdown sequence closes on
//!   SIGTERM, so the load balancer stops sending traffic before the server
//!   stops accepting it.
//! * [`FnHealthCheck`] for checks written as closures, and
//!   `PostgresHealthCheck` (feature `postgres`) for an sqlx pool.
//!
//! This crate knows nothing about how the process shuts down: it only
//! exposes the gate, which the shutdown crate (or the application) closes.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use agent_patterns_health::*;
//!
//! struct LlmHealthCheck;
//!
//! #[async_trait]
//! impl HealthCheckable for LlmHealthCheck {
//!     async fn check_health(&self) -> ComponentHealth {
//!         ComponentHealth::healthy("LLM service reachable")
//!     }
//!
//!     fn component_name(&self) -> &str {
//!         "llm_service"
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut system_health = SystemHealthCheck::new();
//! system_health.add_check(Arc::new(LlmHealthCheck));
//!
//! let results = system_health.check_all().await;
//! assert_eq!(results["llm_service"].status, HealthStatus::Healthy);
//! assert_eq!(system_health.overall_health().await, HealthStatus::Healthy);
//!
//! // Serve the probes next to the application's routes.
//! let health = Arc::new(system_health);
//! let app: axum::Router = axum::Router::new().merge(probe_routes(Arc::clone(&health)));
//! assert_eq!(health.readiness().await.status, http::StatusCode::OK);
//!
//! // On SIGTERM the shutdown sequence closes the gate: readiness turns 503.
//! health.readiness_gate().start_draining();
//! assert_eq!(health.readiness().await.status, http::StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(health.liveness().status, http::StatusCode::OK);
//! # let _ = app;
//! # }
//! ```

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod checks;
mod component;
mod config;
mod error;
#[cfg(feature = "postgres")]
mod postgres;
mod probes;
mod system;

pub use checks::FnHealthCheck;
pub use component::{ComponentHealth, HealthCheckable, HealthStatus};
pub use config::{CheckOptions, DetailLevel, HealthConfig};
pub use error::HealthError;
#[cfg(feature = "postgres")]
pub use postgres::PostgresHealthCheck;
pub use probes::{HEALTH_JSON, ProbeResponse, probe_routes};
pub use system::{CheckReport, HealthReport, ReadinessGate, SystemHealthCheck, aggregate_status};

/// Re-exported so `#[async_trait]` resolves after `use agent_patterns_health::*;`.
pub use async_trait::async_trait;

/// Re-exported so the guide's examples need no extra imports after the glob import.
pub use std::sync::Arc;
/// Re-exported so the guide's examples need no extra imports after the glob import.
pub use std::time::Duration;

/// The sqlx pool type the Postgres check takes (feature `postgres`).
#[cfg(feature = "postgres")]
pub use sqlx::PgPool;
