//! [`FnShutdownHandler`]: a handler written as a closure.

use std::future::Future;

use async_trait::async_trait;

use crate::{ShutdownHandler, ShutdownPhase};

/// A handler built from a name, a phase and an async closure.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use agent_patterns_shutdown::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let shutdown = ShutdownCoordinator::new(Duration::from_secs(30));
/// shutdown.register(Arc::new(FnShutdownHandler::new(
///     "metrics_push",
///     ShutdownPhase::FlushBuffers,
///     || async { Ok(()) },
/// )));
/// assert!(shutdown.shutdown().await.is_ok());
/// # }
/// ```
pub struct FnShutdownHandler<F> {
    name: String,
    phase: ShutdownPhase,
    run: F,
}

impl<F> std::fmt::Debug for FnShutdownHandler<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnShutdownHandler")
            .field("name", &self.name)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> FnShutdownHandler<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), String>> + Send,
{
    /// A handler named `name` that runs `run` in `phase`.
    pub fn new(name: impl Into<String>, phase: ShutdownPhase, run: F) -> Self {
        Self {
            name: name.into(),
            phase,
            run,
        }
    }
}

#[async_trait]
impl<F, Fut> ShutdownHandler for FnShutdownHandler<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), String>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn shutdown(&self) -> Result<(), String> {
        (self.run)().await
    }

    fn phase(&self) -> ShutdownPhase {
        self.phase
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closure_handler_runs_the_closure_in_its_phase() {
        let handler = FnShutdownHandler::new("flush", ShutdownPhase::CloseResources, || async {
            Err("disk full".to_owned())
        });
        assert_eq!(handler.name(), "flush");
        assert_eq!(handler.phase(), ShutdownPhase::CloseResources);
        assert_eq!(handler.shutdown().await, Err("disk full".to_owned()));
    }
}
