//! The tracing sink and the fan-out logger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use agent_patterns_audit::{
    AuditError, AuditEvent, AuditEventType, AuditLogger, FanOutAuditLogger, InMemoryAuditLogger,
    TracingAuditLogger, VerifyRange,
};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// One captured tracing event: target, level, fields.
type Record = (String, String, Vec<(String, String)>);

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Record>>>);

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((meta.target().to_owned(), meta.level().to_string(), fields.0));
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn tracing_sink_emits_each_stored_event_on_the_audit_target_redacted() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = Arc::new(InMemoryAuditLogger::new());
    let logger = TracingAuditLogger::new(store.clone());
    let event = AuditEvent::new(AuditEventType::Authentication, "user-1", "login", true)
        .with_source_ip("192.0.2.1")
        .with_metadata("password", "hunter2")
        .with_metadata("method", "password");
    let id = event.id;
    logger.log(event).await.unwrap();
    let bad = AuditEvent::new(
        AuditEventType::Authentication,
        "user-1",
        "x".repeat(100_000),
        false,
    );
    assert!(logger.log(bad).await.is_err());

    let events = captured.0.lock().unwrap().clone();
    assert_eq!(
        events.len(),
        1,
        "refused by the sink's policy before reaching the store"
    );
    let (target, level, fields) = &events[0];
    assert_eq!((target.as_str(), level.as_str()), ("audit", "INFO"));
    assert_eq!(field(fields, "event_id"), Some(id.to_string().as_str()));
    assert_eq!(field(fields, "event_type"), Some("authentication"));
    assert_eq!(field(fields, "actor"), Some("user-1"));
    assert_eq!(field(fields, "source_ip"), Some("192.0.2.1"));
    let metadata = field(fields, "metadata").unwrap();
    assert!(
        metadata.contains("[REDACTED]") && !metadata.contains("hunter2"),
        "{metadata}"
    );
    assert_eq!(logger.count().await, 1);
}

#[tokio::test]
async fn tracing_sink_warns_when_the_store_refuses() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let strict = agent_patterns_audit::InMemoryAuditConfig {
        policy: agent_patterns_audit::EventPolicy {
            max_metadata_entries: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let store = Arc::new(InMemoryAuditLogger::with_config(strict).unwrap());
    let logger = TracingAuditLogger::new(store);
    let event =
        AuditEvent::new(AuditEventType::Security, "u", "scan", false).with_metadata("k", "v");
    assert!(matches!(
        logger.log(event).await,
        Err(AuditError::InvalidEvent(_))
    ));
    let events = captured.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("audit", "WARN")
    );
    assert!(field(&events[0].2, "error").is_some());
}

#[tokio::test]
async fn fan_out_writes_every_store_and_reads_from_the_primary() {
    let primary = Arc::new(InMemoryAuditLogger::new());
    let mirror = Arc::new(InMemoryAuditLogger::new());
    let fan_out = FanOutAuditLogger::new(primary.clone(), vec![]).with(mirror.clone());
    for i in 0..5 {
        fan_out
            .log(AuditEvent::new(
                AuditEventType::DataAccess,
                "u",
                format!("{i}"),
                true,
            ))
            .await
            .unwrap();
    }
    assert_eq!((primary.count().await, mirror.count().await), (5, 5));
    assert_eq!(
        primary.snapshot(),
        mirror.snapshot(),
        "same events, same chain"
    );
    assert_eq!(fan_out.get_recent_events(2).await.unwrap().len(), 2);
    assert!(fan_out.verify(VerifyRange::all()).await.unwrap().is_valid());
    assert!(fan_out.health().await.healthy);
}

#[tokio::test]
async fn fan_out_fails_when_any_store_fails_and_a_retry_is_safe() {
    let primary = Arc::new(InMemoryAuditLogger::new());
    let tiny = agent_patterns_audit::InMemoryAuditConfig {
        policy: agent_patterns_audit::EventPolicy {
            max_field_bytes: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let strict = Arc::new(InMemoryAuditLogger::with_config(tiny).unwrap());
    let fan_out = FanOutAuditLogger::new(primary.clone(), vec![strict.clone()]);
    let event = AuditEvent::new(AuditEventType::DataAccess, "long-actor", "read", true);
    assert!(fan_out.log(event.clone()).await.is_err());
    assert_eq!((primary.count().await, strict.count().await), (1, 0));
    // Logging the same event again does not duplicate it in the primary.
    assert!(fan_out.log(event).await.is_err());
    assert_eq!(primary.count().await, 1);
}

#[tokio::test]
async fn with_nobody_listening_the_sink_still_checks_then_stores() {
    // No subscriber: the sink skips the copy and the formatting, not the checks.
    let store = Arc::new(InMemoryAuditLogger::new());
    let logger = TracingAuditLogger::new(store.clone());
    assert!(!tracing::enabled!(target: "audit", tracing::Level::WARN));
    let bad = AuditEvent::new(AuditEventType::Security, "u\0", "scan", false);
    assert!(matches!(
        logger.log(bad).await,
        Err(AuditError::InvalidEvent(_))
    ));
    logger
        .log(
            AuditEvent::new(AuditEventType::Security, "u", "scan", true)
                .with_metadata("api_key", "sk-1234"),
        )
        .await
        .unwrap();
    assert_eq!(store.count().await, 1);
    let stored = store.get_recent_events(1).await.unwrap();
    assert_ne!(stored[0].metadata["api_key"], "sk-1234");
}
