//! The [`ShutdownHandler`] trait and the [`ShutdownPhase`]s handlers run in.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The ordered steps of a shutdown. Phases run one after another; the
/// handlers of one phase run concurrently.
///
/// The order follows what a pod under a load balancer needs: first leave the
/// load balancer, then stop taking work, finish the work in flight, persist
/// what is buffered, and only then close the connections that persisting
/// needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownPhase {
    /// Announce the shutdown: readiness turns 503. Runs before the drain
    /// delay, so the load balancer has the delay to notice.
    Unready,
    /// Stop accepting new work: the HTTP server stops accepting connections
    /// and finishes the requests in flight. Subscribers
    /// ([`ShutdownCoordinator::subscribe`](crate::ShutdownCoordinator::subscribe))
    /// are signalled when this phase begins.
    StopAccepting,
    /// Wait for in-flight background work: the coordinator's task tracker
    /// is closed and awaited here, together with this phase's handlers.
    DrainInFlight,
    /// Flush buffers: the audit log, metrics, caches. The default phase of
    /// a handler.
    FlushBuffers,
    /// Close pools and connections.
    CloseResources,
}

impl ShutdownPhase {
    /// Every phase, in the order they run.
    pub const ALL: [ShutdownPhase; 5] = [
        Self::Unready,
        Self::StopAccepting,
        Self::DrainInFlight,
        Self::FlushBuffers,
        Self::CloseResources,
    ];

    /// The phase's name as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unready => "unready",
            Self::StopAccepting => "stop_accepting",
            Self::DrainInFlight => "drain_in_flight",
            Self::FlushBuffers => "flush_buffers",
            Self::CloseResources => "close_resources",
        }
    }
}

impl fmt::Display for ShutdownPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that must be stopped, flushed or closed when the process shuts
/// down.
///
/// ```
/// use agent_patterns_shutdown::*;
///
/// struct CacheShutdownHandler;
///
/// #[async_trait]
/// impl ShutdownHandler for CacheShutdownHandler {
///     fn name(&self) -> &str {
///         "redis_cache"
///     }
///
///     async fn shutdown(&self) -> Result<(), String> {
///         // flush the cache here
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait ShutdownHandler: Send + Sync {
    /// The handler's name, used in the [`ShutdownReport`](crate::ShutdownReport)
    /// and in logs.
    fn name(&self) -> &str;

    /// Stops the component. An `Err` is reported by name; it does not stop
    /// the other handlers.
    async fn shutdown(&self) -> Result<(), String>;

    /// The phase the handler runs in when registered with
    /// [`register`](crate::ShutdownCoordinator::register). Default
    /// [`ShutdownPhase::FlushBuffers`].
    fn phase(&self) -> ShutdownPhase {
        ShutdownPhase::FlushBuffers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_ordered_as_they_run() {
        let mut sorted = ShutdownPhase::ALL;
        sorted.sort();
        assert_eq!(sorted, ShutdownPhase::ALL);
        assert_eq!(ShutdownPhase::ALL[0], ShutdownPhase::Unready);
        assert_eq!(ShutdownPhase::CloseResources.to_string(), "close_resources");
    }
}
