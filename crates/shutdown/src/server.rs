//! Stopping an HTTP server: [`ServerHandle`] and [`ServerShutdownHandler`].

use std::future::{Future, IntoFuture};

use async_trait::async_trait;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::{ShutdownHandler, ShutdownPhase};

/// A handle on a running server: a stop signal the server's graceful
/// shutdown listens to, and a tracker that knows when the server's future
/// has returned (every in-flight request finished).
///
/// Cloning shares the handle.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use agent_patterns_shutdown::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
///
/// let server = ServerHandle::new();
/// let serve = server.serve(
///     axum::serve(listener, app).with_graceful_shutdown(server.stop_signal()),
/// );
/// let task = tokio::spawn(serve);
///
/// let shutdown = Arc::new(ShutdownCoordinator::new(Duration::from_secs(30)));
/// shutdown.register(Arc::new(ServerShutdownHandler::new(server)));
/// shutdown.shutdown().await?; // stops the server and waits for it
/// assert!(task.is_finished());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerHandle {
    stop: CancellationToken,
    running: TaskTracker,
}

impl ServerHandle {
    /// A handle for a server that has not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The future to pass to the server's graceful shutdown (e.g. axum's
    /// `with_graceful_shutdown`); it completes when [`stop`](Self::stop) is
    /// called.
    pub fn stop_signal(&self) -> WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// Wraps the server's future so the handle knows when it has returned.
    pub fn serve<F>(&self, server: F) -> impl Future<Output = F::Output> + Send + 'static
    where
        F: IntoFuture,
        F::IntoFuture: Send + 'static,
    {
        self.running.track_future(server.into_future())
    }

    /// Tells the server to stop accepting connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether [`stop`](Self::stop) has been called.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Waits until every future wrapped with [`serve`](Self::serve) has
    /// returned. Returns at once if none was wrapped.
    pub async fn stopped(&self) {
        self.running.close();
        self.running.wait().await;
    }
}

/// Stops a server on shutdown: signals its [`ServerHandle`] and waits until
/// the server has finished its in-flight requests. Runs in
/// [`ShutdownPhase::StopAccepting`]; the coordinator's timeouts bound the
/// wait.
#[derive(Debug, Clone)]
pub struct ServerShutdownHandler {
    server: ServerHandle,
    name: String,
}

impl ServerShutdownHandler {
    /// A handler named `http_server` for `server`.
    pub fn new(server: ServerHandle) -> Self {
        Self {
            server,
            name: "http_server".to_owned(),
        }
    }

    /// Renames the handler (e.g. `metrics_server`).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

#[async_trait]
impl ShutdownHandler for ServerShutdownHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn shutdown(&self) -> Result<(), String> {
        self.server.stop();
        self.server.stopped().await;
        Ok(())
    }

    fn phase(&self) -> ShutdownPhase {
        ShutdownPhase::StopAccepting
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn handler_signals_stop_and_waits_for_the_server_future() {
        let server = ServerHandle::new();
        let signal = server.stop_signal();
        let serving = tokio::spawn(server.serve(async move {
            signal.await;
            // finishing in-flight requests
            tokio::time::sleep(Duration::from_secs(3)).await;
        }));
        let handler = ServerShutdownHandler::new(server.clone());
        let start = tokio::time::Instant::now();
        handler.shutdown().await.unwrap();
        assert!(server.is_stopping());
        assert!(serving.is_finished());
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn handler_returns_at_once_when_no_server_runs() {
        let handler = ServerShutdownHandler::new(ServerHandle::new()).with_name("admin");
        assert_eq!(handler.name(), "admin");
        assert_eq!(handler.phase(), ShutdownPhase::StopAccepting);
        handler.shutdown().await.unwrap();
    }
}
