//! The user guide's audit code, as written, against this crate's exports only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_patterns_audit::*;
use agent_patterns_core::AgentError;

async fn guide_with_agent_error(
    user_id: &str,
    session_id: String,
    request_ip: std::net::IpAddr,
) -> Result<usize, AgentError> {
    let audit_logger = Arc::new(InMemoryAuditLogger::new());

    // Log authentication
    let event = AuditEvent::new(AuditEventType::Authentication, user_id, "login", true)
        .with_session_id(session_id)
        .with_source_ip(request_ip)
        .with_metadata("method", "password");

    audit_logger.log(event).await?;

    // Log LLM interaction
    let event = AuditEvent::new(
        AuditEventType::LlmInteraction,
        user_id,
        "send_message",
        true,
    )
    .with_resource("conversation:123")
    .with_metadata("message_length", "142")
    .with_metadata("model", "claude-sonnet-4");

    audit_logger.log(event).await?;

    // Get events for user
    let events = audit_logger.get_events_for_actor(user_id).await?;
    assert_eq!(events.len(), 2);

    // Get recent events
    let recent = audit_logger.get_recent_events(100).await?;
    assert_eq!(recent.len(), 2);

    // Get events by type
    let llm_events = audit_logger
        .get_events_by_type(AuditEventType::LlmInteraction)
        .await?;
    assert_eq!(llm_events.len(), 1);

    // Count events
    let total = audit_logger.count().await;
    Ok(total)
}

async fn guide_with_boxed_error(
    audit_logger: &Arc<InMemoryAuditLogger>,
    user_id: String,
    action: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    // Log attempt
    let event = AuditEvent::new(AuditEventType::Authorization, &user_id, action, false);
    audit_logger.log(event).await?;

    let result: Result<(), String> = Ok(());
    let event = AuditEvent::new(
        AuditEventType::Authorization,
        user_id,
        action,
        result.is_ok(),
    )
    .with_metadata(
        "result",
        result.as_ref().map(|_| "success").unwrap_or("failure"),
    );
    audit_logger.log(event).await?;
    Ok(())
}

/// A user's own store, implemented with the re-exported `async_trait`.
struct Nothing;

#[async_trait]
impl AuditLogger for Nothing {
    async fn log(&self, _: AuditEvent) -> Result<(), AuditError> {
        Err(AuditError::Unavailable("nowhere to write".into()))
    }
    async fn get_events_for_actor(&self, _: &str) -> Result<Vec<AuditEvent>, AuditError> {
        Ok(Vec::new())
    }
    async fn get_recent_events(&self, _: usize) -> Result<Vec<AuditEvent>, AuditError> {
        Ok(Vec::new())
    }
    async fn get_events_by_type(&self, _: AuditEventType) -> Result<Vec<AuditEvent>, AuditError> {
        Ok(Vec::new())
    }
    async fn count(&self) -> usize {
        0
    }
    async fn query(&self, _: AuditQuery) -> Result<AuditPage, AuditError> {
        Ok(AuditPage {
            events: Vec::new(),
            next_cursor: None,
        })
    }
    async fn verify(&self, _: VerifyRange) -> Result<ChainVerification, AuditError> {
        Ok(ChainVerifier::new(Some(ChainHead::EMPTY)).finish())
    }
}

#[tokio::test]
async fn guide_audit_code_runs_with_agent_error_and_boxed_errors() {
    let total = guide_with_agent_error("user-123", "session-1".to_owned(), [10, 0, 0, 1].into())
        .await
        .unwrap();
    assert_eq!(total, 2);

    let audit_logger = Arc::new(InMemoryAuditLogger::new());
    guide_with_boxed_error(&audit_logger, "admin-1".to_owned(), "delete_user")
        .await
        .unwrap();
    let events = audit_logger.get_events_for_actor("admin-1").await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.success).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(events[0].metadata["result"], "success");
}

#[tokio::test]
async fn custom_loggers_are_usable_as_trait_objects() {
    let logger: Arc<dyn AuditLogger> = Arc::new(Nothing);
    let err = logger
        .log(AuditEvent::new(AuditEventType::Security, "u", "a", true))
        .await
        .unwrap_err();
    let agent: AgentError = err.into();
    assert!(agent.is_temporary());
    assert!(logger.health().await.healthy);
}

#[test]
fn environment_event_type_strings_parse() {
    let parsed: AuditEventType = "llm_interaction".parse().unwrap();
    assert_eq!(parsed, AuditEventType::LlmInteraction);
}
