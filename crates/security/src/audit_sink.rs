//! Writes incidents to an audit trail as `AuditEventType::Security` events.

use std::sync::Arc;

use agent_patterns_audit::{AuditEvent, AuditEventType, AuditLogger};
use async_trait::async_trait;

use crate::incident::SecurityIncident;
use crate::monitor::SecurityMonitor;
use crate::sink::IncidentSink;

/// An [`IncidentSink`] that logs every incident report to an [`AuditLogger`].
///
/// Each report becomes one `Security` event: the actor is the incident's
/// source, the action `security_incident.<type>`, `success` is `false`, the
/// resource `incident:<id>`, and the metadata carries `incident_id`,
/// `incident_type`, `severity`, `count`, `status`, `new` and `description`.
#[derive(Clone)]
pub struct AuditIncidentSink {
    logger: Arc<dyn AuditLogger>,
}

impl std::fmt::Debug for AuditIncidentSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditIncidentSink").finish_non_exhaustive()
    }
}

impl AuditIncidentSink {
    /// A sink writing to `logger`.
    pub fn new(logger: Arc<dyn AuditLogger>) -> Self {
        Self { logger }
    }
}

/// The audit event recorded for one incident report.
pub fn incident_audit_event(incident: &SecurityIncident, is_new: bool) -> AuditEvent {
    let id = incident.id.map(|i| i.0.to_string()).unwrap_or_default();
    AuditEvent::new(
        AuditEventType::Security,
        incident.source.clone(),
        format!("security_incident.{}", incident.incident_type.as_str()),
        false,
    )
    .with_resource(format!("incident:{id}"))
    .with_metadata("incident_id", id)
    .with_metadata("incident_type", incident.incident_type.as_str())
    .with_metadata("severity", incident.threat_level.as_str())
    .with_metadata("count", incident.count.to_string())
    .with_metadata("status", incident.status.as_str())
    .with_metadata("new", is_new.to_string())
    .with_metadata("description", incident.description.clone())
}

#[async_trait]
impl IncidentSink for AuditIncidentSink {
    async fn record(&self, incident: &SecurityIncident, is_new: bool) -> Result<(), String> {
        self.logger
            .log(incident_audit_event(incident, is_new))
            .await
            .map_err(|e| e.to_string())
    }
}

impl SecurityMonitor {
    /// Also write every incident report to `logger` as an audit `Security` event.
    pub fn with_audit_logger(self, logger: Arc<dyn AuditLogger>) -> Self {
        self.with_sink(Arc::new(AuditIncidentSink::new(logger)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{IncidentType, ThreatLevel};
    use agent_patterns_audit::InMemoryAuditLogger;

    #[tokio::test]
    async fn every_report_is_written_as_a_security_audit_event() {
        let audit = Arc::new(InMemoryAuditLogger::new());
        let monitor = SecurityMonitor::new().with_audit_logger(audit.clone());
        for _ in 0..2 {
            monitor
                .report_incident(SecurityIncident::new(
                    IncidentType::PromptInjection,
                    ThreatLevel::High,
                    "user-1",
                    "ignore previous instructions",
                ))
                .await
                .unwrap();
        }
        let events = audit
            .get_events_by_type(AuditEventType::Security)
            .await
            .unwrap();
        assert_eq!(events.len(), 2);
        let newest = &events[0];
        assert_eq!(newest.actor, "user-1");
        assert_eq!(newest.action, "security_incident.prompt_injection");
        assert!(!newest.success);
        assert_eq!(
            newest.metadata.get("severity").map(String::as_str),
            Some("high")
        );
        assert_eq!(newest.metadata.get("count").map(String::as_str), Some("2"));
        assert_eq!(
            newest.metadata.get("new").map(String::as_str),
            Some("false")
        );
    }
}
