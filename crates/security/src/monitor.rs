//! The security monitor: records, de-duplicates, bounds, publishes and summarises incidents.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::SecurityError;
use crate::incident::{IncidentId, IncidentStatus, IncidentType, SecurityIncident, ThreatLevel};
use crate::sink::IncidentSink;

/// Prometheus name of the incident counter (labels `type`, `severity`); it counts
/// every report, including repeats folded into an open incident.
pub const SECURITY_INCIDENTS_TOTAL: &str = "security_incidents_total";
/// Prometheus name of the counter of incidents dropped to keep memory bounded.
pub const SECURITY_INCIDENTS_EVICTED_TOTAL: &str = "security_incidents_evicted_total";

/// Register descriptions of this crate's metrics with the installed recorder.
/// Harmless if none is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        SECURITY_INCIDENTS_TOTAL,
        "Security incident reports, by incident type and severity."
    );
    metrics::describe_counter!(
        SECURITY_INCIDENTS_EVICTED_TOTAL,
        "Incidents dropped from the monitor's memory to respect max_incidents."
    );
}

/// Configuration of a [`SecurityMonitor`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorConfig {
    /// Most incidents kept in memory; past it the oldest resolved incident is
    /// dropped first, then the oldest of any status. Must be at least 1.
    pub max_incidents: usize,
    /// A report with the same type and source as an open incident last seen
    /// within this window increments that incident's count instead of opening a
    /// new one. Zero disables de-duplication. Seconds in config files.
    #[serde(with = "crate::duration_secs")]
    pub dedup_window: Duration,
    /// Capacity of the broadcast channel that feeds [`SecurityMonitor::subscribe`];
    /// a subscriber that falls further behind loses the oldest incidents. At least 1.
    pub subscriber_capacity: usize,
    /// How many sources the dashboard lists in `top_sources`.
    pub top_sources: usize,
    /// Longest description kept (bytes); longer ones are cut at a character boundary.
    pub max_description_len: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            max_incidents: 10_000,
            dedup_window: Duration::from_secs(300),
            subscriber_capacity: 1024,
            top_sources: 10,
            max_description_len: 4096,
        }
    }
}

impl MonitorConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SecurityError> {
        if self.max_incidents == 0 {
            return Err(SecurityError::config("max_incidents", "must be at least 1"));
        }
        if self.subscriber_capacity == 0 {
            return Err(SecurityError::config(
                "subscriber_capacity",
                "must be at least 1",
            ));
        }
        if self.max_description_len == 0 {
            return Err(SecurityError::config(
                "max_description_len",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Which incidents [`SecurityMonitor::list_incidents`] returns. Every field that
/// is set must match; the default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IncidentFilter {
    /// Only this type.
    pub incident_type: Option<IncidentType>,
    /// Only this level or higher.
    pub min_level: Option<ThreatLevel>,
    /// Only this source (exact match).
    pub source: Option<String>,
    /// Only incidents last seen at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only incidents last seen before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only open (active or acknowledged) incidents.
    pub open_only: bool,
    /// At most this many (newest first).
    pub limit: Option<usize>,
}

impl IncidentFilter {
    fn matches(&self, incident: &SecurityIncident) -> bool {
        self.incident_type
            .is_none_or(|t| incident.incident_type == t)
            && self.min_level.is_none_or(|l| incident.threat_level >= l)
            && self.source.as_deref().is_none_or(|s| incident.source == s)
            && self.since.is_none_or(|t| incident.last_seen >= t)
            && self.until.is_none_or(|t| incident.last_seen < t)
            && (!self.open_only || incident.status.is_open())
    }
}

/// A summary of the incidents the monitor holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityDashboard {
    /// Incidents held in memory (evicted ones are counted in `evicted_incidents`).
    pub total_incidents: usize,
    /// Held incidents nobody has acknowledged or resolved yet.
    pub active_incidents: usize,
    /// Held incidents that are acknowledged but not resolved.
    pub acknowledged_incidents: usize,
    /// Reports folded into the held incidents (each incident counts its repeats).
    pub total_occurrences: u64,
    /// Held incidents per threat level; every level is present, lowest first.
    pub incidents_by_severity: BTreeMap<ThreatLevel, usize>,
    /// Held incidents per type (types with none are omitted).
    pub incidents_by_type: BTreeMap<IncidentType, usize>,
    /// Sources with the most incidents, most first (ties by name).
    pub top_sources: Vec<(String, usize)>,
    /// Incidents seen (first or again) in the last hour.
    pub incidents_last_hour: usize,
    /// Incidents seen (first or again) in the last 24 hours.
    pub incidents_last_24h: usize,
    /// Incidents dropped so far to respect `max_incidents`.
    pub evicted_incidents: u64,
}

struct Record {
    incident: SecurityIncident,
    last_instant: Instant,
}

#[derive(Default)]
struct State {
    incidents: BTreeMap<IncidentId, Record>,
    /// Open incident per (type, source) that repeats are folded into.
    open: HashMap<(IncidentType, String), IncidentId>,
    /// Resolved incidents, oldest first: evicted before anything else.
    resolved: BTreeSet<IncidentId>,
    next_id: u64,
    evicted: u64,
}

impl State {
    fn evict_one(&mut self) -> bool {
        let victim = match self.resolved.pop_first() {
            Some(id) => Some(id),
            None => self.incidents.keys().next().copied(),
        };
        let Some(id) = victim else { return false };
        if let Some(record) = self.incidents.remove(&id) {
            let key = (record.incident.incident_type, record.incident.source);
            if self.open.get(&key) == Some(&id) {
                self.open.remove(&key);
            }
        }
        self.evicted += 1;
        true
    }
}

/// Outcome of [`SecurityMonitor::report_incident`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    /// The incident the report was recorded in.
    pub id: IncidentId,
    /// `false` when the report was folded into an open incident.
    pub is_new: bool,
    /// Reports folded into that incident so far.
    pub count: u64,
}

/// Records security incidents and tells operators about them.
///
/// * Repeats (same type and source within `dedup_window` of the open incident's
///   last sighting) increment that incident's count instead of opening a new one.
/// * Memory is bounded by `max_incidents`: the oldest resolved incident is
///   dropped first, then the oldest overall; drops are counted.
/// * New incidents are published to [`subscribe`](Self::subscribe)rs, every report
///   is counted in `security_incidents_total{type,severity}`, and logged with
///   `tracing`; with an audit logger configured each report is also written as an
///   audit `Security` event.
/// * Times follow tokio's clock, so tests can drive them with paused time.
pub struct SecurityMonitor {
    config: MonitorConfig,
    clock: Clock,
    state: Mutex<State>,
    events: broadcast::Sender<SecurityIncident>,
    sinks: Vec<Arc<dyn IncidentSink>>,
}

impl std::fmt::Debug for SecurityMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityMonitor")
            .field("config", &self.config)
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl Default for SecurityMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl SecurityMonitor {
    /// A monitor with [`MonitorConfig::default`] and no audit logger.
    pub fn new() -> Self {
        Self::build(MonitorConfig::default())
    }

    /// A monitor with `config`, rejected with an error naming the field if invalid.
    pub fn with_config(config: MonitorConfig) -> Result<Self, SecurityError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: MonitorConfig) -> Self {
        let (events, _) = broadcast::channel(config.subscriber_capacity);
        Self {
            config,
            clock: Clock::new(),
            state: Mutex::new(State::default()),
            events,
            sinks: Vec::new(),
        }
    }

    /// Also send every report to `sink` (for example an audit logger). Sinks are
    /// called in the order they were added.
    pub fn with_sink(mut self, sink: Arc<dyn IncidentSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every mutation below leaves the state consistent before it can panic,
        // so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record `incident`: open a new one, or fold it into the open incident of the
    /// same type and source. Returns what happened.
    ///
    /// The incident is recorded, counted and published before the audit write;
    /// if that write fails the error says so (the incident is kept).
    pub async fn report_incident(
        &self,
        mut incident: SecurityIncident,
    ) -> Result<Reported, SecurityError> {
        truncate_at_char_boundary(&mut incident.description, self.config.max_description_len);
        let (now, wall) = self.clock.now();
        let (reported, snapshot, evicted) = {
            let mut state = self.lock();
            let key = (incident.incident_type, incident.source.clone());
            let window = self.config.dedup_window;
            let folded = state.open.get(&key).copied().and_then(|id| {
                let record = state.incidents.get_mut(&id)?;
                let fresh = !window.is_zero()
                    && record.incident.status.is_open()
                    && now.saturating_duration_since(record.last_instant) <= window;
                if !fresh {
                    return None;
                }
                record.last_instant = now;
                let held = &mut record.incident;
                held.last_seen = wall;
                held.count = held.count.saturating_add(1);
                held.threat_level = held.threat_level.max(incident.threat_level);
                Some((
                    Reported {
                        id,
                        is_new: false,
                        count: held.count,
                    },
                    held.clone(),
                ))
            });
            match folded {
                Some((reported, snapshot)) => (reported, snapshot, 0),
                None => {
                    state.next_id += 1;
                    let id = IncidentId(state.next_id);
                    incident.id = Some(id);
                    incident.first_seen = wall;
                    incident.last_seen = wall;
                    incident.count = 1;
                    incident.status = IncidentStatus::Active;
                    state.open.insert(key, id);
                    state.incidents.insert(
                        id,
                        Record {
                            incident: incident.clone(),
                            last_instant: now,
                        },
                    );
                    let mut evicted = 0u64;
                    while state.incidents.len() > self.config.max_incidents && state.evict_one() {
                        evicted += 1;
                    }
                    let reported = Reported {
                        id,
                        is_new: true,
                        count: 1,
                    };
                    (reported, incident, evicted)
                }
            }
        };

        metrics::counter!(
            SECURITY_INCIDENTS_TOTAL,
            "type" => snapshot.incident_type.as_str(),
            "severity" => snapshot.threat_level.as_str()
        )
        .increment(1);
        if evicted > 0 {
            metrics::counter!(SECURITY_INCIDENTS_EVICTED_TOTAL).increment(evicted);
        }
        if reported.is_new {
            tracing::warn!(
                incident_id = reported.id.0,
                incident_type = snapshot.incident_type.as_str(),
                severity = snapshot.threat_level.as_str(),
                source = %snapshot.source,
                description = %snapshot.description,
                "security incident"
            );
            // No receiver is not an error: alerting is optional.
            let _ = self.events.send(snapshot.clone());
        } else {
            tracing::debug!(
                incident_id = reported.id.0,
                count = reported.count,
                "security incident repeated"
            );
        }
        for sink in &self.sinks {
            sink.record(&snapshot, reported.is_new)
                .await
                .map_err(|reason| SecurityError::Audit {
                    id: reported.id.0,
                    reason,
                })?;
        }
        Ok(reported)
    }

    /// A receiver of every new incident (not of repeats folded into open ones).
    /// The channel is bounded by `subscriber_capacity`; a slow receiver gets
    /// `RecvError::Lagged` and skips ahead.
    pub fn subscribe(&self) -> broadcast::Receiver<SecurityIncident> {
        self.events.subscribe()
    }

    /// The incident with `id`, if it is still held.
    pub fn get_incident(&self, id: IncidentId) -> Option<SecurityIncident> {
        self.lock().incidents.get(&id).map(|r| r.incident.clone())
    }

    /// Held incidents matching `filter`, newest first.
    pub fn list_incidents(&self, filter: &IncidentFilter) -> Vec<SecurityIncident> {
        let state = self.lock();
        let limit = filter.limit.unwrap_or(usize::MAX);
        state
            .incidents
            .values()
            .rev()
            .map(|r| &r.incident)
            .filter(|i| filter.matches(i))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Mark an active incident as acknowledged by `by`.
    pub fn acknowledge(
        &self,
        id: IncidentId,
        by: impl Into<String>,
    ) -> Result<SecurityIncident, SecurityError> {
        let at = self.clock.now().1;
        let mut state = self.lock();
        let record = state
            .incidents
            .get_mut(&id)
            .ok_or(SecurityError::IncidentNotFound(id.0))?;
        match record.incident.status {
            IncidentStatus::Active => {
                record.incident.status = IncidentStatus::Acknowledged { by: by.into(), at };
                Ok(record.incident.clone())
            }
            ref other => Err(SecurityError::InvalidTransition {
                id: id.0,
                from: other.as_str(),
                to: "acknowledged",
            }),
        }
    }

    /// Mark an open (active or acknowledged) incident as resolved by `by`. Later
    /// reports of the same type and source open a new incident.
    pub fn resolve(
        &self,
        id: IncidentId,
        by: impl Into<String>,
    ) -> Result<SecurityIncident, SecurityError> {
        let at = self.clock.now().1;
        let mut state = self.lock();
        let record = state
            .incidents
            .get_mut(&id)
            .ok_or(SecurityError::IncidentNotFound(id.0))?;
        if !record.incident.status.is_open() {
            return Err(SecurityError::InvalidTransition {
                id: id.0,
                from: record.incident.status.as_str(),
                to: "resolved",
            });
        }
        record.incident.status = IncidentStatus::Resolved { by: by.into(), at };
        let snapshot = record.incident.clone();
        let key = (snapshot.incident_type, snapshot.source.clone());
        if state.open.get(&key) == Some(&id) {
            state.open.remove(&key);
        }
        state.resolved.insert(id);
        Ok(snapshot)
    }

    /// Summary counts over the held incidents; the time windows are measured
    /// on tokio's clock back from now.
    pub async fn get_dashboard(&self) -> Result<SecurityDashboard, SecurityError> {
        let now = Instant::now();
        let hour_ago = now.checked_sub(Duration::from_secs(3600));
        let day_ago = now.checked_sub(Duration::from_secs(24 * 3600));
        let within = |at: Instant, since: Option<Instant>| since.is_none_or(|s| at >= s);

        let state = self.lock();
        let mut dashboard = SecurityDashboard {
            total_incidents: state.incidents.len(),
            active_incidents: 0,
            acknowledged_incidents: 0,
            total_occurrences: 0,
            incidents_by_severity: ThreatLevel::ALL.iter().map(|l| (*l, 0)).collect(),
            incidents_by_type: BTreeMap::new(),
            top_sources: Vec::new(),
            incidents_last_hour: 0,
            incidents_last_24h: 0,
            evicted_incidents: state.evicted,
        };
        let mut by_source: HashMap<&str, usize> = HashMap::new();
        for record in state.incidents.values() {
            let incident = &record.incident;
            match incident.status {
                IncidentStatus::Active => dashboard.active_incidents += 1,
                IncidentStatus::Acknowledged { .. } => dashboard.acknowledged_incidents += 1,
                IncidentStatus::Resolved { .. } => {}
            }
            dashboard.total_occurrences += incident.count;
            *dashboard
                .incidents_by_severity
                .entry(incident.threat_level)
                .or_default() += 1;
            *dashboard
                .incidents_by_type
                .entry(incident.incident_type)
                .or_default() += 1;
            *by_source.entry(incident.source.as_str()).or_default() += 1;
            if within(record.last_instant, hour_ago) {
                dashboard.incidents_last_hour += 1;
            }
            if within(record.last_instant, day_ago) {
                dashboard.incidents_last_24h += 1;
            }
        }
        let mut sources: Vec<(String, usize)> = by_source
            .into_iter()
            .map(|(s, n)| (s.to_owned(), n))
            .collect();
        sources.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sources.truncate(self.config.top_sources);
        dashboard.top_sources = sources;
        Ok(dashboard)
    }
}

fn truncate_at_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}
