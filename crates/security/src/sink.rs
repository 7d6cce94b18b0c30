//! Where incidents go besides the monitor's memory (an audit trail, a pager).

use async_trait::async_trait;

use crate::incident::SecurityIncident;

/// A destination for every incident report, called by
/// [`SecurityMonitor::report_incident`](crate::SecurityMonitor::report_incident)
/// after the incident is recorded.
///
/// `is_new` is `false` when the report was folded into an open incident (then
/// `incident.count` says how many reports it now holds). An error is returned to
/// the reporter as [`SecurityError::Audit`](crate::SecurityError::Audit).
#[async_trait]
pub trait IncidentSink: Send + Sync {
    /// Write one report.
    async fn record(&self, incident: &SecurityIncident, is_new: bool) -> Result<(), String>;
}
