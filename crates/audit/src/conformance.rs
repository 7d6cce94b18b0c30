//! The behaviour every [`AuditLogger`] must show, as a suite any store's tests
//! can run (feature `conformance`).
//!
//! Each function takes a fresh, empty store with the default
//! [`EventPolicy`](crate::EventPolicy) and panics with a message on the first
//! broken promise. `agent-patterns-audit` runs it against
//! [`InMemoryAuditLogger`](crate::InMemoryAuditLogger) and
//! `agent-patterns-audit-postgres` against its PostgreSQL store, so both
//! behave the same.

// Test support: a failed expectation is meant to panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration, SubsecRound, Utc};

use crate::chain::{ChainHash, VerifyRange};
use crate::event::{AuditEvent, AuditEventType};
use crate::logger::AuditLogger;
use crate::policy::REDACTED;
use crate::query::AuditQuery;

/// Runs every check, each on a fresh store from `new_store`.
pub async fn run_all<L, F, Fut>(mut new_store: F)
where
    L: AuditLogger,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = L>,
{
    guide_calls(&new_store().await).await;
    general_query(&new_store().await).await;
    pagination_is_stable(&new_store().await).await;
    redacts_secret_metadata(&new_store().await).await;
    idempotent_by_event_id(&new_store().await).await;
    chain_links_every_event(&new_store().await).await;
    rejects_invalid_input(&new_store().await).await;
}

/// The calls the user guide makes, with the results it implies.
pub async fn guide_calls(logger: &dyn AuditLogger) {
    let user_id = "user-123";
    let event = AuditEvent::new(AuditEventType::Authentication, user_id, "login", true)
        .with_session_id("session-1")
        .with_source_ip("192.0.2.10")
        .with_metadata("method", "password");
    let login_id = event.id;
    logger.log(event).await.expect("log authentication");
    let event = AuditEvent::new(
        AuditEventType::LlmInteraction,
        user_id,
        "send_message",
        true,
    )
    .with_resource("conversation:123")
    .with_metadata("message_length", "142")
    .with_metadata("model", "claude-sonnet-4");
    logger.log(event).await.expect("log llm interaction");
    logger
        .log(AuditEvent::new(
            AuditEventType::Authorization,
            "someone-else",
            "read",
            false,
        ))
        .await
        .expect("log authorization");

    let events = logger
        .get_events_for_actor(user_id)
        .await
        .expect("events for actor");
    let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["send_message", "login"],
        "actor's events, newest first"
    );
    let login = &events[1];
    assert_eq!(login.id, login_id);
    assert_eq!(login.session_id.as_deref(), Some("session-1"));
    assert_eq!(login.source_ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(
        login.metadata.get("method").map(String::as_str),
        Some("password")
    );
    assert!(
        logger
            .get_events_for_actor("nobody")
            .await
            .unwrap()
            .is_empty()
    );

    let recent = logger.get_recent_events(2).await.expect("recent");
    let actions: Vec<_> = recent.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["read", "send_message"],
        "recent events, newest first"
    );
    assert_eq!(logger.get_recent_events(100).await.unwrap().len(), 3);
    assert!(logger.get_recent_events(0).await.unwrap().is_empty());

    let llm = logger
        .get_events_by_type(AuditEventType::LlmInteraction)
        .await
        .expect("by type");
    assert_eq!(llm.len(), 1);
    assert_eq!(llm[0].resource.as_deref(), Some("conversation:123"));
    assert_eq!(
        llm[0].metadata.get("model").map(String::as_str),
        Some("claude-sonnet-4")
    );
    assert!(
        logger
            .get_events_by_type(AuditEventType::Configuration)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(logger.count().await, 3);
}

/// Every filter of [`AuditQuery`], alone and combined.
pub async fn general_query(logger: &dyn AuditLogger) {
    let base = (Utc::now() - Duration::hours(10)).trunc_subsecs(6);
    for i in 0..10_i64 {
        let event_type = if i % 2 == 0 {
            AuditEventType::DataAccess
        } else {
            AuditEventType::Security
        };
        let event = AuditEvent::new(
            event_type,
            format!("actor-{}", i % 3),
            format!("act-{i}"),
            i % 4 != 0,
        )
        .with_resource(format!("doc:{}", i % 5))
        .with_timestamp(base + Duration::hours(i));
        logger.log(event).await.unwrap();
    }
    let actions = |page: crate::AuditPage| -> Vec<String> {
        page.events.into_iter().map(|e| e.action).collect()
    };
    let q = |query: AuditQuery| async move { logger.query(query).await.unwrap() };

    assert_eq!(q(AuditQuery::new()).await.events.len(), 10);
    assert_eq!(
        actions(q(AuditQuery::new().actor("actor-1")).await),
        ["act-7", "act-4", "act-1"]
    );
    assert_eq!(
        actions(
            q(AuditQuery::new()
                .event_type(AuditEventType::Security)
                .success(false))
            .await
        ),
        Vec::<String>::new(),
        "odd i are never multiples of 4"
    );
    assert_eq!(
        actions(
            q(AuditQuery::new()
                .event_type(AuditEventType::DataAccess)
                .success(false))
            .await
        ),
        ["act-8", "act-4", "act-0"]
    );
    assert_eq!(
        actions(q(AuditQuery::new().resource("doc:2")).await),
        ["act-7", "act-2"]
    );
    assert_eq!(
        actions(
            q(AuditQuery::new().between(base + Duration::hours(3), base + Duration::hours(6)))
                .await
        ),
        ["act-5", "act-4", "act-3"],
        "from is inclusive, to exclusive"
    );
    assert_eq!(
        actions(
            q(AuditQuery::new()
                .since(base + Duration::hours(8))
                .actor("actor-0"))
            .await
        ),
        ["act-9"]
    );
    assert_eq!(
        actions(q(AuditQuery::new().until(base + Duration::hours(1))).await),
        ["act-0"]
    );
}

/// Pages follow each other without overlap or gap, even while new events arrive.
pub async fn pagination_is_stable(logger: &dyn AuditLogger) {
    for i in 0..25 {
        logger
            .log(AuditEvent::new(
                AuditEventType::DataAccess,
                "pager",
                format!("{i}"),
                true,
            ))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut query = AuditQuery::new().actor("pager").limit(10);
    loop {
        let page = logger.query(query.clone()).await.unwrap();
        assert!(page.events.len() <= 10);
        seen.extend(page.events.iter().map(|e| e.action.clone()));
        // Events logged between pages land before the cursor and never shift it.
        logger
            .log(AuditEvent::new(
                AuditEventType::DataAccess,
                "pager",
                "late",
                true,
            ))
            .await
            .unwrap();
        match page.next_cursor {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| i.to_string()).collect();
    assert_eq!(seen, expected);
}

/// Secret-looking metadata is never stored in clear.
pub async fn redacts_secret_metadata(logger: &dyn AuditLogger) {
    let event = AuditEvent::new(AuditEventType::Authentication, "redact-me", "login", true)
        .with_metadata("password", "hunter2")
        .with_metadata("X-Api-Key", "sk-live-1")
        .with_metadata("Authorization", "Bearer abc")
        .with_metadata("session_cookie", "c=1")
        .with_metadata("method", "password");
    logger.log(event).await.unwrap();
    let stored = logger
        .get_events_for_actor("redact-me")
        .await
        .unwrap()
        .remove(0);
    for key in ["password", "X-Api-Key", "Authorization", "session_cookie"] {
        assert_eq!(stored.metadata[key], REDACTED, "{key} must be redacted");
    }
    assert_eq!(stored.metadata["method"], "password");
    assert!(logger.verify(VerifyRange::all()).await.unwrap().is_valid());
}

/// Logging an already stored event id again stores nothing.
pub async fn idempotent_by_event_id(logger: &dyn AuditLogger) {
    let event = AuditEvent::new(AuditEventType::Configuration, "ops", "set_limit", true);
    logger.log(event.clone()).await.unwrap();
    logger.log(event.clone()).await.unwrap();
    let again = event.clone().with_metadata("changed", "yes");
    logger.log(again).await.unwrap();
    let stored = logger.get_events_for_actor("ops").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].metadata.is_empty(), "the first copy wins");
    assert_eq!(logger.count().await, 1);
}

/// Events form one gapless chain from genesis, and `verify` accepts it whole
/// and in parts.
pub async fn chain_links_every_event(logger: &dyn AuditLogger) {
    for i in 0..20 {
        logger
            .log(AuditEvent::new(
                AuditEventType::Security,
                "chain",
                format!("{i}"),
                true,
            ))
            .await
            .unwrap();
    }
    let mut events = logger.get_recent_events(100).await.unwrap();
    events.reverse();
    let links: Vec<_> = events
        .iter()
        .map(|e| e.chain.expect("stored events are chained"))
        .collect();
    assert_eq!(links[0].sequence, 1);
    assert_eq!(links[0].prev_hash, ChainHash::GENESIS);
    for pair in links.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    let report = logger.verify(VerifyRange::all()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 20);
    assert_eq!(
        report.last_verified.map(|h| (h.sequence, h.hash)),
        Some((20, links[19].hash))
    );
    let part = logger.verify(VerifyRange::between(5, 9)).await.unwrap();
    assert!(part.is_valid(), "{part:?}");
    assert_eq!(part.checked, 5);
    assert_eq!(part.last_verified.map(|h| h.sequence), Some(9));
}

/// Bad input is refused with an error, never stored, never a panic.
pub async fn rejects_invalid_input(logger: &dyn AuditLogger) {
    let nul = AuditEvent::new(AuditEventType::DataAccess, "a\0b", "read", true);
    assert!(logger.log(nul).await.is_err());
    let huge = AuditEvent::new(AuditEventType::DataAccess, "a", "x".repeat(1 << 20), true);
    assert!(logger.log(huge).await.is_err());
    assert!(logger.query(AuditQuery::new().limit(0)).await.is_err());
    assert!(
        logger
            .query(AuditQuery::new().limit(usize::MAX))
            .await
            .is_err()
    );
    assert_eq!(logger.count().await, 0);
}
