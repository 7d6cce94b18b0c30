//! SIGTERM handling. This file is its own test binary with a single test, so
//! the signals it sends reach no other test.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agent_patterns_shutdown::*;

fn send_to_self(signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_and_sigint_are_recognised_and_sigterm_starts_the_shutdown() {
    let mut listener = SignalListener::new().unwrap();
    send_to_self("TERM");
    assert_eq!(listener.recv().await.unwrap(), ReceivedSignal::Terminate);
    send_to_self("INT");
    assert_eq!(listener.recv().await.unwrap(), ReceivedSignal::Interrupt);
    assert_eq!(ReceivedSignal::Terminate.to_string(), "SIGTERM");

    let shutdown = Arc::new(ShutdownCoordinator::new(Duration::from_secs(30)));
    let mut stop = shutdown.subscribe();
    let waiting = tokio::spawn({
        let shutdown = Arc::clone(&shutdown);
        async move { shutdown.shutdown_on_signal().await }
    });
    // Let the task install its listener.
    tokio::task::yield_now().await;
    assert!(!shutdown.is_shutting_down());
    for _ in 0..50 {
        send_to_self("TERM");
        if tokio::time::timeout(Duration::from_millis(100), stop.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    assert!(stop.is_triggered());
    let report = waiting.await.unwrap().unwrap();
    assert!(report.is_success());
}
