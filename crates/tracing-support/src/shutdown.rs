//! Span export as a step of the graceful-shutdown sequence.

use agent_patterns_shutdown::{ShutdownHandler, ShutdownPhase, async_trait};

use crate::TracingGuard;

/// Registers span export with the shutdown coordinator:
/// `coordinator.register(Arc::new(guard.clone()))`.
///
/// Runs in the last phase ([`ShutdownPhase::CloseResources`]) so the spans
/// of every earlier shutdown step are exported too.
#[async_trait]
impl ShutdownHandler for TracingGuard {
    fn name(&self) -> &str {
        "tracing"
    }

    async fn shutdown(&self) -> Result<(), String> {
        TracingGuard::shutdown(self)
            .await
            .map_err(|e| e.to_string())
    }

    fn phase(&self) -> ShutdownPhase {
        ShutdownPhase::CloseResources
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use agent_patterns_shutdown::ShutdownCoordinator;

    use super::*;
    use crate::{OtlpConfig, TracingBuilder};

    #[tokio::test]
    async fn coordinator_shuts_span_export_down_in_the_last_phase() {
        let (_dispatch, guard) = TracingBuilder::new("svc")
            .ignore_environment()
            .log_writer(std::io::sink)
            .build()
            .unwrap();
        assert_eq!(ShutdownHandler::name(&guard), "tracing");
        assert_eq!(
            ShutdownHandler::phase(&guard),
            ShutdownPhase::CloseResources
        );
        let coordinator = ShutdownCoordinator::new(Duration::from_secs(5));
        coordinator.register(Arc::new(guard.clone()));
        let report = coordinator.shutdown().await.unwrap();
        assert!(
            report
                .handler("tracing")
                .is_some_and(|h| h.outcome.is_success())
        );
    }

    #[tokio::test]
    async fn lost_spans_fail_the_handler_by_name() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let (dispatch, guard) = TracingBuilder::new("svc")
            .ignore_environment()
            .otlp(OtlpConfig::grpc(endpoint))
            .log_writer(std::io::sink)
            .build()
            .unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("request").in_scope(|| tracing::info!("work"));
        });
        let error = ShutdownHandler::shutdown(&guard).await.unwrap_err();
        assert!(error.contains("could not be exported"), "{error}");
    }
}
