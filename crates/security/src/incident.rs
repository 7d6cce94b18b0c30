//! Incidents: what happened, how bad it is, who caused it, and where it stands.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kind of attack or abuse an incident describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentType {
    /// Repeated failed authentications against one account or from one source.
    BruteForceAttack,
    /// Access that deviates from the usual pattern of a user or source.
    AnomalousAccess,
    /// An attempt to gain rights the caller does not have.
    PrivilegeEscalation,
    /// An attempt to move data out of the system (e.g. to a URL an attacker controls).
    DataExfiltration,
    /// Text that tries to override or subvert the agent's instructions.
    PromptInjection,
    /// A source that keeps hammering a rate limiter after being refused.
    RateLimitAbuse,
    /// Access to a resource without valid credentials.
    UnauthorizedAccess,
    /// Unexpected changes to configuration.
    ConfigurationTampering,
    /// Many different accounts tried from one source (leaked credential lists).
    CredentialStuffing,
    /// A session used from a new network location or client.
    SessionHijacking,
}

impl IncidentType {
    /// Every variant, in declaration order.
    pub const ALL: [IncidentType; 10] = [
        Self::BruteForceAttack,
        Self::AnomalousAccess,
        Self::PrivilegeEscalation,
        Self::DataExfiltration,
        Self::PromptInjection,
        Self::RateLimitAbuse,
        Self::UnauthorizedAccess,
        Self::ConfigurationTampering,
        Self::CredentialStuffing,
        Self::SessionHijacking,
    ];

    /// Stable snake_case name, used as the `type` metric label and in audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BruteForceAttack => "brute_force_attack",
            Self::AnomalousAccess => "anomalous_access",
            Self::PrivilegeEscalation => "privilege_escalation",
            Self::DataExfiltration => "data_exfiltration",
            Self::PromptInjection => "prompt_injection",
            Self::RateLimitAbuse => "rate_limit_abuse",
            Self::UnauthorizedAccess => "unauthorized_access",
            Self::ConfigurationTampering => "configuration_tampering",
            Self::CredentialStuffing => "credential_stuffing",
            Self::SessionHijacking => "session_hijacking",
        }
    }
}

impl fmt::Display for IncidentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How severe an incident is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreatLevel {
    /// Worth recording; no action needed.
    Low,
    /// Worth a look during working hours.
    Medium,
    /// Someone should look soon.
    High,
    /// Someone should look now.
    Critical,
}

impl ThreatLevel {
    /// Every level, lowest first.
    pub const ALL: [ThreatLevel; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// Stable lowercase name, used as the `severity` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for ThreatLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifier the monitor gives an incident; increases with every new incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IncidentId(pub u64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an incident stands: `Active` → `Acknowledged` → `Resolved`
/// (`Active` → `Resolved` directly is allowed too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum IncidentStatus {
    /// Open and nobody has looked at it yet.
    Active,
    /// Someone is looking at it.
    Acknowledged {
        /// Who acknowledged it.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Closed.
    Resolved {
        /// Who resolved it.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl IncidentStatus {
    /// `"active"`, `"acknowledged"` or `"resolved"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Acknowledged { .. } => "acknowledged",
            Self::Resolved { .. } => "resolved",
        }
    }

    /// Whether the incident is still open (active or acknowledged): repeats of
    /// the same type and source are folded into an open incident.
    pub fn is_open(&self) -> bool {
        !matches!(self, Self::Resolved { .. })
    }
}

/// One security incident.
///
/// Build it with [`SecurityIncident::new`] and hand it to
/// [`SecurityMonitor::report_incident`](crate::SecurityMonitor::report_incident);
/// the monitor fills in the id, the times and the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityIncident {
    /// Set by the monitor when the incident is recorded (`None` before).
    pub id: Option<IncidentId>,
    /// What kind of incident.
    pub incident_type: IncidentType,
    /// How severe; raised (never lowered) when repeats are folded in.
    pub threat_level: ThreatLevel,
    /// Who or what caused it: a user id, an IP address, a session id.
    pub source: String,
    /// Human-readable detail.
    pub description: String,
    /// When it was first seen (set by the monitor from its clock).
    pub first_seen: DateTime<Utc>,
    /// When it was last seen (equals `first_seen` until a repeat is folded in).
    pub last_seen: DateTime<Utc>,
    /// How many reports were folded into this incident (1 for a new one).
    pub count: u64,
    /// Where the incident stands.
    pub status: IncidentStatus,
}

impl SecurityIncident {
    /// A new incident of `incident_type` at `threat_level`, caused by `source`
    /// (anything printable: a user id, a `&str`, an `IpAddr`), described by `description`.
    pub fn new(
        incident_type: IncidentType,
        threat_level: ThreatLevel,
        source: impl fmt::Display,
        description: impl Into<String>,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: None,
            incident_type,
            threat_level,
            source: source.to_string(),
            description: description.into(),
            first_seen: now,
            last_seen: now,
            count: 1,
            status: IncidentStatus::Active,
        }
    }
}
