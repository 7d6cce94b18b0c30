//! The Kubernetes SIGTERM sequence against a real axum server on
//! 127.0.0.1:0, on virtual time.
//!
//! The client side uses blocking sockets inside `spawn_blocking`: while a
//! blocking task runs, a paused tokio clock does not auto-advance, so the
//! drain delay ends exactly when the test calls `advance`.
#![cfg(feature = "health")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_patterns_health::{SystemHealthCheck, probe_routes};
use agent_patterns_shutdown::*;
use axum::Router;
use axum::routing::get;
use tokio::sync::oneshot;

fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    // Guards the test against a hang; never reached when the code is right.
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

async fn request(addr: SocketAddr, path: &'static str) -> io::Result<(u16, String)> {
    tokio::task::spawn_blocking(move || http_get(addr, path))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn sigterm_sequence_drains_in_flight_requests_and_flips_readiness_first() {
    let health = Arc::new(SystemHealthCheck::new());

    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let entered_tx = Arc::new(Mutex::new(Some(entered_tx)));
    let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let entered_tx = Arc::clone(&entered_tx);
                let release_rx = Arc::clone(&release_rx);
                async move {
                    if let Some(tx) = entered_tx.lock().unwrap().take() {
                        tx.send(()).unwrap();
                    }
                    if let Some(rx) = release_rx.lock().await.take() {
                        rx.await.unwrap();
                    }
                    "slow work done"
                }
            }),
        )
        .merge(probe_routes(Arc::clone(&health)));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let shutdown = Arc::new(
        ShutdownCoordinator::with_config(
            ShutdownConfig::with_timeout(Duration::from_secs(30))
                .drain_delay(Duration::from_secs(5)),
        )
        .unwrap(),
    );
    shutdown.register(Arc::new(ReadinessShutdownHandler::new(
        health.readiness_gate(),
    )));
    let server = ServerHandle::new();
    let mut shutdown_rx = shutdown.subscribe();
    let serving =
        tokio::spawn(server.serve(
            axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown_rx.recv().await;
            }),
        ));
    shutdown.register(Arc::new(ServerShutdownHandler::new(server)));

    assert_eq!(request(addr, "/health/ready").await.unwrap().0, 200);

    // A request is in flight when SIGTERM arrives.
    let in_flight = tokio::task::spawn_blocking(move || http_get(addr, "/slow"));
    entered_rx.await.unwrap();
    let start = tokio::time::Instant::now();
    let shutting_down = tokio::spawn({
        let shutdown = Arc::clone(&shutdown);
        async move { shutdown.shutdown().await }
    });
    for _ in 0..1_000 {
        if health.is_draining() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(health.is_draining(), "readiness turns 503 at once");

    // During the drain delay: still accepting, readiness 503, liveness 200.
    let (status, body) = request(addr, "/health/ready").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains(r#""status":"fail""#), "{body}");
    let (status, body) = request(addr, "/health/live").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(r#""status":"pass""#), "{body}");
    assert_eq!(start.elapsed(), Duration::ZERO);

    // After the drain delay the server stops accepting new connections.
    tokio::time::advance(Duration::from_secs(5)).await;
    let mut refused = false;
    for _ in 0..10_000 {
        let attempt = tokio::task::spawn_blocking(move || TcpStream::connect(addr))
            .await
            .unwrap();
        match attempt {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::task::yield_now().await,
        }
    }
    assert!(refused, "new connections must be refused after the drain");
    assert!(
        !shutting_down.is_finished(),
        "shutdown waits for the in-flight request"
    );

    // The in-flight request completes with 200, then the shutdown finishes.
    release_tx.send(()).unwrap();
    let (status, body) = in_flight.await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slow work done");

    let report = shutting_down.await.unwrap().unwrap();
    let names: Vec<_> = report.handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["readiness", "http_server", IN_FLIGHT_TASKS]);
    assert!(report.is_success());
    assert!(serving.await.unwrap().is_ok());
}
