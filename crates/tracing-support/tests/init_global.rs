//! The pipeline installed globally, with the collector down (the only test
//! in this binary, since a process has one global subscriber).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use agent_patterns_tracing_support::*;
use support::LogBuffer;

#[tokio::test]
async fn global_pipeline_starts_without_a_collector_and_logs_the_outage_once() {
    // Nothing listens here; start-up must not wait for the collector.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let logs = LogBuffer::default();
    // The guard is discarded as in the guide's `init_tracing(..).await?;`:
    // export goes on, and `shutdown_tracing` reaches the pipeline.
    let _ = TracingBuilder::new("production-agent")
        .ignore_environment()
        .otlp(OtlpConfig {
            max_export_batch_size: 1,
            ..OtlpConfig::grpc(endpoint.as_str())
        })
        .log_writer(logs.clone())
        .install()
        .unwrap();

    for round in 0..3 {
        let span = tracing::info_span!("handle_request", round);
        let _entered = span.enter();
        tracing::info!("inside a span");
        assert!(current_trace_ids().is_some(), "spans get trace ids");
    }

    let again = init_tracing("production-agent", endpoint.as_str()).await;
    assert!(matches!(again, Err(TracingError::AlreadyInstalled(_))));

    // The collector is down: shutdown reports the loss instead of hanging.
    let result = shutdown_tracing().await;
    assert!(
        matches!(
            result,
            Err(TracingError::ExportFailed { .. }) | Err(TracingError::Timeout { .. })
        ),
        "{result:?}"
    );
    // Idempotent.
    assert!(shutdown_tracing().await.is_ok());

    let text = logs.contents();
    let inside = text.lines().filter(|l| l.contains("inside a span")).count();
    assert_eq!(inside, 3);
    assert!(
        text.lines()
            .all(|l| !l.contains("inside a span") || l.contains("\"trace_id\""))
    );
    // Three failed batches, one warning.
    let warnings = text
        .lines()
        .filter(|l| l.contains("span export failing"))
        .count();
    assert_eq!(warnings, 1, "{text}");
}
