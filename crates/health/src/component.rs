//! One component's health: the status, the trait a component implements, and
//! the result it returns.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How well a component (or the whole system) works.
///
/// The variants are ordered from best to worst, so the status of a group is
/// the [`max`](Ord::max) of its members' statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Works as expected.
    Healthy,
    /// Works, but with reduced quality (slow, a fallback in use, a
    /// non-critical dependency down). Still ready for traffic.
    Degraded,
    /// Does not work.
    Unhealthy,
}

impl HealthStatus {
    /// The `status` value of the IETF `application/health+json` draft:
    /// `pass`, `warn` or `fail`.
    pub fn as_health_json(self) -> &'static str {
        match self {
            Self::Healthy => "pass",
            Self::Degraded => "warn",
            Self::Unhealthy => "fail",
        }
    }

    /// `true` unless the status is [`Unhealthy`](Self::Unhealthy): a degraded
    /// component still serves.
    pub fn is_available(self) -> bool {
        self != Self::Unhealthy
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        })
    }
}

/// The result of one health check.
///
/// Build it with [`healthy`](Self::healthy), [`degraded`](Self::degraded) or
/// [`unhealthy`](Self::unhealthy). When the check runs through
/// [`SystemHealthCheck`](crate::SystemHealthCheck), `latency` and
/// `observed_at` are overwritten with the measured values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// The component's status.
    pub status: HealthStatus,
    /// A human-readable explanation ("Database connected", "DB error: …").
    pub message: String,
    /// How long the check took.
    pub latency: Duration,
    /// When the check finished (wall clock, for the probe body's `time`).
    pub observed_at: DateTime<Utc>,
}

impl ComponentHealth {
    fn new(status: HealthStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            latency: Duration::ZERO,
            observed_at: Utc::now(),
        }
    }

    /// A healthy result with an explanation.
    pub fn healthy(message: impl Into<String>) -> Self {
        Self::new(HealthStatus::Healthy, message)
    }

    /// A degraded result: the component works with reduced quality.
    pub fn degraded(message: impl Into<String>) -> Self {
        Self::new(HealthStatus::Degraded, message)
    }

    /// An unhealthy result with the reason.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self::new(HealthStatus::Unhealthy, message)
    }

    /// Replaces the latency (builder style).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// `true` when the status is [`HealthStatus::Healthy`].
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

/// A component that can report its own health: a database pool, an LLM
/// client, a cache.
///
/// Implementations should be cheap and bounded; the
/// [`SystemHealthCheck`](crate::SystemHealthCheck) running them adds a
/// timeout, catches panics and caches the result anyway.
///
/// ```
/// use agent_patterns_health::*;
///
/// struct Cache;
///
/// #[async_trait]
/// impl HealthCheckable for Cache {
///     async fn check_health(&self) -> ComponentHealth {
///         ComponentHealth::healthy("cache reachable")
///     }
///
///     fn component_name(&self) -> &str {
///         "cache"
///     }
/// }
/// ```
#[async_trait]
pub trait HealthCheckable: Send + Sync {
    /// Checks the component now.
    async fn check_health(&self) -> ComponentHealth;

    /// The component's name: the key in [`check_all`](crate::SystemHealthCheck::check_all)
    /// and in the probe body's `checks`.
    fn component_name(&self) -> &str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_order_from_best_to_worst() {
        assert!(HealthStatus::Healthy < HealthStatus::Degraded);
        assert!(HealthStatus::Degraded < HealthStatus::Unhealthy);
        assert_eq!(
            HealthStatus::Healthy.max(HealthStatus::Unhealthy),
            HealthStatus::Unhealthy
        );
    }

    #[test]
    fn statuses_map_to_health_json_values() {
        assert_eq!(HealthStatus::Healthy.as_health_json(), "pass");
        assert_eq!(HealthStatus::Degraded.as_health_json(), "warn");
        assert_eq!(HealthStatus::Unhealthy.as_health_json(), "fail");
    }

    #[test]
    fn constructors_accept_str_and_string() {
        let ok = ComponentHealth::healthy("up");
        let bad = ComponentHealth::unhealthy(format!("DB error: {}", 42));
        assert_eq!(ok.status, HealthStatus::Healthy);
        assert!(ok.is_healthy());
        assert_eq!(bad.status, HealthStatus::Unhealthy);
        assert_eq!(bad.message, "DB error: 42");
        assert_eq!(
            ComponentHealth::degraded("slow").status,
            HealthStatus::Degraded
        );
    }
}
