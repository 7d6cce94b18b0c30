//! Production infrastructure for AI agents, in one dependency.
//!
//! This facade re-exports the workspace's crates so an application can depend
//! on one package and switch parts on with cargo features. The core types
//! (errors, messages, the environment trait, the reducer architecture and
//! agent metrics) are at the root; each other crate is a module behind a
//! feature of the same name.
//!
//! `use composable_rust_agent_patterns::*;` brings the core types, `Arc`,
//! `Duration`, `async_trait`, and the types the guide's first examples use
//! from the other crates (`CircuitBreaker`, `RateLimiter`, `Bulkhead`,
//! `InMemoryAuditLogger`, `SecurityMonitor`, …).
//!
//! # Example
//!
//! ```
//! use composable_rust_agent_patterns::*;
//!
//! let metrics = AgentMetrics::new();
//! metrics.record_tool_call("calculator", true, Duration::from_millis(50));
//! assert_eq!(metrics.snapshot().success_rate(), 1.0);
//!
//! let err = AgentError::RateLimited;
//! assert_eq!(err.status_code().as_u16(), 429);
//! assert!(err.is_temporary());
//! ```

pub use agent_patterns_core::*;

/// Re-exported so guide examples using `Arc` and `Duration` need no extra imports.
pub use std::sync::Arc;
pub use std::time::Duration;

/// Re-exported for implementing the workspace's async traits.
pub use async_trait::async_trait;

/// The core crate under its own name, for paths like `agent_core::Store`.
/// (Not `core`: `use composable_rust_agent_patterns::*;` would then make the
/// standard library's `core` ambiguous in the user's imports.)
pub use agent_patterns_core as agent_core;

/// Circuit breaker, rate limiters, bulkhead, retry, timeout and tower layers
/// (crate `agent-patterns-resilience`, feature `resilience`).
#[cfg(feature = "resilience")]
pub mod resilience {
    /// The resilience crate's metric names and `describe_metrics()`.
    pub use agent_patterns_resilience::metrics as resilience_metrics;
    /// The resilience crate's `retry` module (its types are also here at
    /// the top).
    pub use agent_patterns_resilience::retry as resilience_retry;
    pub use agent_patterns_resilience::*;
    pub use std::sync::Arc;
    pub use std::time::Duration;
    // Private imports shadow the glob's `metrics` and `retry` modules, so
    // that `use …::resilience::*;` leaves the names of the `metrics` and
    // `retry` crates free.
    #[allow(unused_imports, hidden_glob_reexports)]
    use agent_patterns_resilience::{metrics, retry};
}

/// Health checks and the Kubernetes probe routes (crate
/// `agent-patterns-health`, feature `health`).
#[cfg(feature = "health")]
pub mod health {
    pub use agent_patterns_health::*;
}

/// Graceful shutdown: the coordinator, phases and handlers (crate
/// `agent-patterns-shutdown`, feature `shutdown`).
#[cfg(feature = "shutdown")]
pub mod shutdown {
    pub use agent_patterns_shutdown::*;
}

/// Tracing setup, OpenTelemetry export, GenAI spans and the Prometheus
/// exporter (crate `agent-patterns-tracing-support`, feature `tracing-support`).
#[cfg(feature = "tracing-support")]
pub mod tracing_support {
    /// The GenAI spans' module (`ChatSpan` and `ToolSpan` are also here at
    /// the top).
    pub use agent_patterns_tracing_support::genai as genai_spans;
    /// The Prometheus recorder's building blocks (buckets, upkeep, the
    /// `/metrics` route); `PrometheusExporter` and `PrometheusConfig` are
    /// also here at the top.
    pub use agent_patterns_tracing_support::prometheus as prometheus_exporter;
    pub use agent_patterns_tracing_support::*;
    pub use std::sync::Arc;
    pub use std::time::Duration;
    // Private imports shadow the glob's `prometheus` and `genai` modules, so
    // that `use …::tracing_support::*;` leaves the names of the `prometheus`
    // and `genai` crates free.
    #[allow(unused_imports, hidden_glob_reexports)]
    use agent_patterns_tracing_support::{genai, prometheus};
}

/// W3C trace-context extraction and injection (feature `tracing-support`).
#[cfg(feature = "tracing-support")]
pub mod context_propagation {
    pub use agent_patterns_tracing_support::context_propagation::*;
}

/// The audit trail: events, the `AuditLogger` trait, the hash chain, the
/// in-memory store and sinks (crate `agent-patterns-audit`, feature `audit`);
/// with feature `postgres`, the durable PostgreSQL store.
#[cfg(feature = "audit")]
pub mod audit {
    pub use agent_patterns_audit::*;
    #[cfg(feature = "postgres")]
    pub use agent_patterns_audit_postgres::{MIGRATOR, PostgresAuditConfig, PostgresAuditLogger};
    pub use std::time::Duration;
}

#[cfg(feature = "audit")]
pub use agent_patterns_audit::{
    AuditError, AuditEvent, AuditEventType, AuditLogger, InMemoryAuditLogger,
};

/// Security monitoring: incidents, brute-force, abuse and session detectors,
/// the prompt-injection detector (crate `agent-patterns-security`, feature
/// `security`).
#[cfg(feature = "security")]
pub mod security {
    pub use agent_patterns_security::*;
    pub use std::sync::Arc;
    pub use std::time::Duration;
}

#[cfg(feature = "security")]
pub use agent_patterns_security::{
    IncidentType, SecurityIncident, SecurityMonitor, ThreatLevel, detect_prompt_injection,
};

#[cfg(feature = "resilience")]
pub use agent_patterns_resilience::{
    Bulkhead, BulkheadConfig, CircuitBreaker, CircuitBreakerConfig, CircuitState, RateLimiter,
    RateLimiterConfig, RateLimiterError,
};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The observability guide's Rust examples, compiled as doctests.
#[cfg(all(doctest, feature = "tracing-support", feature = "resilience"))]
#[doc = include_str!("../../../docs/observability.md")]
pub struct ObservabilityDoctests;

/// The PostgreSQL guide's Rust examples, compiled as doctests.
#[cfg(all(
    doctest,
    feature = "postgres",
    feature = "health",
    feature = "shutdown"
))]
#[doc = include_str!("../../../docs/production-database.md")]
pub struct ProductionDatabaseDoctests;
