//! Session anomalies: one session id seen from a new IP address or client.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::SecurityError;
use crate::incident::{IncidentType, SecurityIncident, ThreatLevel};
use crate::monitor::SecurityMonitor;
use crate::window::BoundedMap;

/// Configuration of a [`SessionAnomalyDetector`]. Off by default: mobile
/// clients change IP addresses legitimately, so turn it on knowingly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionAnomalyConfig {
    /// Whether the detector looks at sessions at all.
    pub enabled: bool,
    /// Flag a session seen from a different IP address than its first.
    pub check_ip: bool,
    /// Flag a session seen with a different user agent than its first.
    pub check_user_agent: bool,
    /// Sessions not seen for this long are forgotten. Seconds in config files.
    #[serde(with = "crate::duration_secs")]
    pub session_ttl: Duration,
    /// Most sessions tracked; least recently seen dropped first. At least 1.
    pub max_sessions: usize,
}

impl Default for SessionAnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            check_ip: true,
            check_user_agent: true,
            session_ttl: Duration::from_secs(24 * 3600),
            max_sessions: 100_000,
        }
    }
}

impl SessionAnomalyConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SecurityError> {
        if self.max_sessions == 0 {
            return Err(SecurityError::config("max_sessions", "must be at least 1"));
        }
        if self.session_ttl.is_zero() {
            return Err(SecurityError::config("session_ttl", "must be positive"));
        }
        Ok(())
    }
}

/// What changed about a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAnomaly {
    /// The session.
    pub session_id: String,
    /// `(first, now)` IP addresses if they differ and IP checks are on.
    pub ip_changed: Option<(String, String)>,
    /// `(first, now)` user agents if they differ and user-agent checks are on.
    pub user_agent_changed: Option<(String, String)>,
}

#[derive(Debug)]
struct Fingerprint {
    ip: String,
    user_agent: String,
    last_seen: Instant,
}

/// Remembers the IP address and user agent a session was first seen with and
/// reports a `SessionHijacking` incident when they change.
pub struct SessionAnomalyDetector {
    config: SessionAnomalyConfig,
    sessions: Mutex<BoundedMap<String, Fingerprint>>,
    monitor: Option<Arc<SecurityMonitor>>,
}

impl std::fmt::Debug for SessionAnomalyDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAnomalyDetector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SessionAnomalyDetector {
    /// A detector with `config`, rejected with an error naming the field if invalid.
    pub fn new(config: SessionAnomalyConfig) -> Result<Self, SecurityError> {
        config.validate()?;
        Ok(Self {
            sessions: Mutex::new(BoundedMap::new(config.max_sessions)),
            config,
            monitor: None,
        })
    }

    /// Report incidents to `monitor`.
    pub fn with_monitor(mut self, monitor: Arc<SecurityMonitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Look at one request of `session_id`. Returns the anomaly, if any (always
    /// `None` when the detector is disabled).
    pub async fn observe(
        &self,
        session_id: &str,
        ip: &str,
        user_agent: &str,
    ) -> Result<Option<SessionAnomaly>, SecurityError> {
        let cfg = &self.config;
        if !cfg.enabled {
            return Ok(None);
        }
        let now = Instant::now();
        let anomaly = {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            let key = session_id.to_owned();
            let expired = sessions
                .get(&key)
                .is_some_and(|f| now.saturating_duration_since(f.last_seen) > cfg.session_ttl);
            if expired {
                sessions.remove(&key);
            }
            let seen = sessions.touch(&key, now, cfg.session_ttl, || Fingerprint {
                ip: ip.to_owned(),
                user_agent: user_agent.to_owned(),
                last_seen: now,
            });
            seen.last_seen = now;
            let ip_changed =
                (cfg.check_ip && seen.ip != ip).then(|| (seen.ip.clone(), ip.to_owned()));
            let user_agent_changed = (cfg.check_user_agent && seen.user_agent != user_agent)
                .then(|| (seen.user_agent.clone(), user_agent.to_owned()));
            (ip_changed.is_some() || user_agent_changed.is_some()).then(|| SessionAnomaly {
                session_id: session_id.to_owned(),
                ip_changed,
                user_agent_changed,
            })
        };
        if let (Some(a), Some(monitor)) = (&anomaly, &self.monitor) {
            let mut what = Vec::new();
            if let Some((old, new)) = &a.ip_changed {
                what.push(format!("IP {old} -> {new}"));
            }
            if let Some((old, new)) = &a.user_agent_changed {
                what.push(format!("user agent {old:?} -> {new:?}"));
            }
            monitor
                .report_incident(SecurityIncident::new(
                    IncidentType::SessionHijacking,
                    ThreatLevel::High,
                    session_id,
                    format!("session used from a new client: {}", what.join(", ")),
                ))
                .await?;
        }
        Ok(anomaly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> SessionAnomalyConfig {
        SessionAnomalyConfig {
            enabled: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn disabled_by_default() {
        let d = SessionAnomalyDetector::new(SessionAnomalyConfig::default()).unwrap();
        d.observe("s", "1.1.1.1", "ua").await.unwrap();
        assert!(d.observe("s", "2.2.2.2", "ua").await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn new_ip_for_a_session_is_reported_as_hijacking() {
        let monitor = Arc::new(SecurityMonitor::new());
        let d = SessionAnomalyDetector::new(enabled())
            .unwrap()
            .with_monitor(Arc::clone(&monitor));
        assert!(
            d.observe("s1", "1.1.1.1", "firefox")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            d.observe("s1", "1.1.1.1", "firefox")
                .await
                .unwrap()
                .is_none()
        );
        let a = d.observe("s1", "6.6.6.6", "curl").await.unwrap().unwrap();
        assert_eq!(a.ip_changed, Some(("1.1.1.1".into(), "6.6.6.6".into())));
        assert!(a.user_agent_changed.is_some());
        let dash = monitor.get_dashboard().await.unwrap();
        assert_eq!(
            dash.incidents_by_type.get(&IncidentType::SessionHijacking),
            Some(&1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_sessions_start_over() {
        let d = SessionAnomalyDetector::new(SessionAnomalyConfig {
            session_ttl: Duration::from_secs(60),
            ..enabled()
        })
        .unwrap();
        d.observe("s1", "1.1.1.1", "ua").await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(d.observe("s1", "2.2.2.2", "ua").await.unwrap().is_none());
    }
}
