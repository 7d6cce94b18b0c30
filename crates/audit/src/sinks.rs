//! Loggers that wrap other loggers: a tracing sink and a fan-out.

use std::sync::Arc;

use async_trait::async_trait;

use crate::chain::{ChainVerification, VerifyRange};
use crate::error::AuditError;
use crate::event::{AuditEvent, AuditEventType};
use crate::logger::{AuditHealth, AuditLogger};
use crate::policy::EventPolicy;
use crate::query::{AuditPage, AuditQuery};

/// The `tracing` target of every event emitted by [`TracingAuditLogger`].
pub const TRACING_TARGET: &str = "audit";

/// Stores events in an inner logger and also emits each one as a structured
/// `tracing` event on target [`audit`](TRACING_TARGET), so the audit trail
/// reaches whatever log pipeline the application installed.
///
/// Stored events are emitted at `INFO`; events the inner logger refused are
/// emitted at `WARN` with the error. Metadata is redacted with this sink's own
/// [`EventPolicy`] before it is emitted, whatever the inner store does.
/// Queries are answered by the inner logger.
pub struct TracingAuditLogger {
    inner: Arc<dyn AuditLogger>,
    policy: EventPolicy,
}

impl std::fmt::Debug for TracingAuditLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingAuditLogger")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl TracingAuditLogger {
    /// Wraps `inner`, redacting emitted metadata with the default policy.
    pub fn new(inner: Arc<dyn AuditLogger>) -> Self {
        Self {
            inner,
            policy: EventPolicy::default(),
        }
    }

    /// Wraps `inner`, redacting emitted metadata with `policy`.
    pub fn with_policy(
        inner: Arc<dyn AuditLogger>,
        policy: EventPolicy,
    ) -> Result<Self, AuditError> {
        policy.validate()?;
        Ok(Self { inner, policy })
    }
}

fn emit(event: &AuditEvent, outcome: &Result<(), AuditError>) {
    match outcome {
        Ok(()) => tracing::info!(
            target: TRACING_TARGET,
            event_id = %event.id,
            timestamp = %event.timestamp.to_rfc3339(),
            event_type = event.event_type.as_str(),
            actor = %event.actor,
            action = %event.action,
            success = event.success,
            session_id = event.session_id.as_deref(),
            source_ip = event.source_ip.as_deref(),
            resource = event.resource.as_deref(),
            metadata = ?event.metadata,
            "audit event"
        ),
        Err(error) => tracing::warn!(
            target: TRACING_TARGET,
            event_id = %event.id,
            event_type = event.event_type.as_str(),
            actor = %event.actor,
            action = %event.action,
            success = event.success,
            %error,
            "audit event not stored"
        ),
    }
}

#[async_trait]
impl AuditLogger for TracingAuditLogger {
    async fn log(&self, event: AuditEvent) -> Result<(), AuditError> {
        // Nobody listens on the `audit` target: check the event as `apply`
        // would, but skip the copy, the redaction and the formatting.
        if !tracing::enabled!(target: TRACING_TARGET, tracing::Level::WARN) {
            self.policy.check(&event)?;
            return self.inner.log(event).await;
        }
        let shown = self.policy.apply(event.clone())?;
        let outcome = self.inner.log(event).await;
        emit(&shown, &outcome);
        outcome
    }

    async fn get_events_for_actor(&self, actor: &str) -> Result<Vec<AuditEvent>, AuditError> {
        self.inner.get_events_for_actor(actor).await
    }

    async fn get_recent_events(&self, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        self.inner.get_recent_events(limit).await
    }

    async fn get_events_by_type(
        &self,
        event_type: AuditEventType,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        self.inner.get_events_by_type(event_type).await
    }

    async fn count(&self) -> usize {
        self.inner.count().await
    }

    async fn query(&self, query: AuditQuery) -> Result<AuditPage, AuditError> {
        self.inner.query(query).await
    }

    async fn verify(&self, range: VerifyRange) -> Result<ChainVerification, AuditError> {
        self.inner.verify(range).await
    }

    async fn health(&self) -> AuditHealth {
        self.inner.health().await
    }
}

/// Writes every event to a primary logger and to secondary ones, concurrently.
///
/// `log` succeeds only when every logger stored the event; on failure it
/// returns the first error (primary first) and the loggers that succeeded
/// keep the event, so logging the same event again is safe (stores are
/// idempotent by id). Reads, counts and verification go to the primary.
pub struct FanOutAuditLogger {
    primary: Arc<dyn AuditLogger>,
    secondaries: Vec<Arc<dyn AuditLogger>>,
}

impl std::fmt::Debug for FanOutAuditLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutAuditLogger")
            .field("secondaries", &self.secondaries.len())
            .finish_non_exhaustive()
    }
}

impl FanOutAuditLogger {
    /// Fans out to `primary` and `secondaries`.
    pub fn new(primary: Arc<dyn AuditLogger>, secondaries: Vec<Arc<dyn AuditLogger>>) -> Self {
        Self {
            primary,
            secondaries,
        }
    }

    /// Adds one more secondary logger.
    #[must_use]
    pub fn with(mut self, secondary: Arc<dyn AuditLogger>) -> Self {
        self.secondaries.push(secondary);
        self
    }
}

#[async_trait]
impl AuditLogger for FanOutAuditLogger {
    async fn log(&self, event: AuditEvent) -> Result<(), AuditError> {
        let writes = std::iter::once(&self.primary)
            .chain(&self.secondaries)
            .map(|logger| logger.log(event.clone()));
        futures::future::join_all(writes)
            .await
            .into_iter()
            .collect()
    }

    async fn get_events_for_actor(&self, actor: &str) -> Result<Vec<AuditEvent>, AuditError> {
        self.primary.get_events_for_actor(actor).await
    }

    async fn get_recent_events(&self, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        self.primary.get_recent_events(limit).await
    }

    async fn get_events_by_type(
        &self,
        event_type: AuditEventType,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        self.primary.get_events_by_type(event_type).await
    }

    async fn count(&self) -> usize {
        self.primary.count().await
    }

    async fn query(&self, query: AuditQuery) -> Result<AuditPage, AuditError> {
        self.primary.query(query).await
    }

    async fn verify(&self, range: VerifyRange) -> Result<ChainVerification, AuditError> {
        self.primary.verify(range).await
    }

    /// Unhealthy when any logger is.
    async fn health(&self) -> AuditHealth {
        let checks = std::iter::once(&self.primary)
            .chain(&self.secondaries)
            .map(|l| l.health());
        let all = futures::future::join_all(checks).await;
        let queued = all.iter().map(|h| h.queued).sum();
        match all.into_iter().find(|h| !h.healthy) {
            Some(sick) => AuditHealth { queued, ..sick },
            None => AuditHealth {
                queued,
                ..AuditHealth::healthy()
            },
        }
    }
}
