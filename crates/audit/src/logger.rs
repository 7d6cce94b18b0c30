//! The trait every audit store implements.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::chain::{ChainVerification, VerifyRange};
use crate::error::AuditError;
use crate::event::{AuditEvent, AuditEventType};
use crate::query::{AuditPage, AuditQuery};

/// An append-only, hash-chained audit trail.
///
/// Object safe: share one as `Arc<dyn AuditLogger>`. Every read returns
/// events newest first, with their [`chain`](AuditEvent::chain) link set.
///
/// Contract for implementations (checked by the `conformance` suite, feature
/// `conformance`):
/// * `log` returns `Ok` only once the event is stored (durably, for a durable
///   store); the event's metadata is redacted by the store's
///   [`EventPolicy`](crate::EventPolicy) first.
/// * Logging an event whose id is already stored is a no-op that returns `Ok`.
/// * All events of one store form one chain, verified by [`verify`](Self::verify).
#[async_trait]
pub trait AuditLogger: Send + Sync {
    /// Stores one event.
    async fn log(&self, event: AuditEvent) -> Result<(), AuditError>;

    /// The actor's events, newest first (capped by the store's result limit).
    async fn get_events_for_actor(&self, actor: &str) -> Result<Vec<AuditEvent>, AuditError>;

    /// The `limit` most recent events, newest first.
    async fn get_recent_events(&self, limit: usize) -> Result<Vec<AuditEvent>, AuditError>;

    /// Events of one type, newest first (capped by the store's result limit).
    async fn get_events_by_type(
        &self,
        event_type: AuditEventType,
    ) -> Result<Vec<AuditEvent>, AuditError>;

    /// How many events the store holds. Infallible by the guide's signature:
    /// a store that cannot ask its backend answers with the last count it knew.
    async fn count(&self) -> usize;

    /// A filtered page of events, newest first.
    async fn query(&self, query: AuditQuery) -> Result<AuditPage, AuditError>;

    /// Walks the chain over `range` and reports the first event that does not fit.
    async fn verify(&self, range: VerifyRange) -> Result<ChainVerification, AuditError>;

    /// Whether the store can currently accept events.
    async fn health(&self) -> AuditHealth {
        AuditHealth::healthy()
    }
}

/// A store's health, for readiness probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHealth {
    /// Whether the store can currently accept and persist events.
    pub healthy: bool,
    /// Why not, when unhealthy.
    pub detail: Option<String>,
    /// Events accepted but not yet stored.
    pub queued: usize,
}

impl AuditHealth {
    /// A healthy store with nothing queued.
    pub fn healthy() -> Self {
        Self {
            healthy: true,
            detail: None,
            queued: 0,
        }
    }

    /// An unhealthy store, with the reason.
    pub fn unhealthy(detail: impl Into<String>) -> Self {
        Self {
            healthy: false,
            detail: Some(detail.into()),
            queued: 0,
        }
    }
}
