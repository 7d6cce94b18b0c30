//! Ready-made checks.

use std::future::Future;

use async_trait::async_trait;

use crate::{ComponentHealth, HealthCheckable};

/// A check built from a name and an async closure.
///
/// ```
/// use agent_patterns_health::*;
///
/// let disk = FnHealthCheck::new("disk", || async {
///     let free_gb = 42;
///     if free_gb > 5 {
///         ComponentHealth::healthy(format!("{free_gb} GB free"))
///     } else {
///         ComponentHealth::degraded(format!("only {free_gb} GB free"))
///     }
/// });
/// assert_eq!(disk.component_name(), "disk");
/// ```
pub struct FnHealthCheck<F> {
    name: String,
    check: F,
}

impl<F> std::fmt::Debug for FnHealthCheck<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnHealthCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> FnHealthCheck<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = ComponentHealth> + Send,
{
    /// A check named `name` that runs `check` each time.
    pub fn new(name: impl Into<String>, check: F) -> Self {
        Self {
            name: name.into(),
            check,
        }
    }
}

#[async_trait]
impl<F, Fut> HealthCheckable for FnHealthCheck<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = ComponentHealth> + Send,
{
    async fn check_health(&self) -> ComponentHealth {
        (self.check)().await
    }

    fn component_name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HealthStatus;

    #[tokio::test]
    async fn closure_check_reports_what_the_closure_returns() {
        let check = FnHealthCheck::new("queue", || async { ComponentHealth::degraded("backlog") });
        let health = check.check_health().await;
        assert_eq!(health.status, HealthStatus::Degraded);
        assert_eq!(health.message, "backlog");
        assert_eq!(check.component_name(), "queue");
    }
}
