//! Turning readiness to 503 on shutdown (feature `health`).

use agent_patterns_health::ReadinessGate;
use async_trait::async_trait;

use crate::{ShutdownHandler, ShutdownPhase};

/// Closes the health crate's [`ReadinessGate`] first thing on shutdown, in
/// [`ShutdownPhase::Unready`]: `/health/ready` answers 503 from then on while
/// `/health/live` keeps answering 200, and the drain delay gives the load
/// balancer time to notice before the server stops accepting.
#[derive(Debug, Clone)]
pub struct ReadinessShutdownHandler {
    gate: ReadinessGate,
}

impl ReadinessShutdownHandler {
    /// A handler named `readiness` that closes `gate`.
    pub fn new(gate: ReadinessGate) -> Self {
        Self { gate }
    }
}

#[async_trait]
impl ShutdownHandler for ReadinessShutdownHandler {
    fn name(&self) -> &str {
        "readiness"
    }

    async fn shutdown(&self) -> Result<(), String> {
        self.gate.start_draining();
        Ok(())
    }

    fn phase(&self) -> ShutdownPhase {
        ShutdownPhase::Unready
    }
}
