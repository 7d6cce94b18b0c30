//! Brute force and credential stuffing: sliding-window counters of failed
//! authentications per source and per account, and a block list with expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::SecurityError;
use crate::incident::{IncidentType, SecurityIncident, ThreatLevel};
use crate::monitor::SecurityMonitor;
use crate::window::{BoundedMap, SlidingWindow};

/// Configuration of a [`BruteForceDetector`]. The defaults follow fail2ban's:
/// 5 failures within 10 minutes block the source for 10 minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BruteForceConfig {
    /// Failures within `window` (from one source, or against one account) that
    /// count as brute force. At least 1.
    pub max_failures: usize,
    /// The sliding window failures are counted in. Seconds in config files.
    #[serde(with = "crate::duration_secs")]
    pub window: Duration,
    /// How long a source stays blocked. Zero: report, never block. Seconds in config files.
    #[serde(with = "crate::duration_secs")]
    pub block_duration: Duration,
    /// Distinct accounts failed from one source within `window` that count as
    /// credential stuffing. At least 2.
    pub stuffing_distinct_accounts: usize,
    /// Most sources and most accounts tracked (each); least recently active dropped first.
    pub max_tracked: usize,
    /// Most entries in the block list; the one expiring soonest is dropped first.
    pub max_blocked: usize,
}

impl Default for BruteForceConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(600),
            block_duration: Duration::from_secs(600),
            stuffing_distinct_accounts: 10,
            max_tracked: 100_000,
            max_blocked: 100_000,
        }
    }
}

impl BruteForceConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SecurityError> {
        if self.max_failures == 0 {
            return Err(SecurityError::config("max_failures", "must be at least 1"));
        }
        if self.window.is_zero() {
            return Err(SecurityError::config("window", "must be positive"));
        }
        if self.stuffing_distinct_accounts < 2 {
            return Err(SecurityError::config(
                "stuffing_distinct_accounts",
                "must be at least 2",
            ));
        }
        if self.max_tracked == 0 {
            return Err(SecurityError::config("max_tracked", "must be at least 1"));
        }
        if self.max_blocked == 0 {
            return Err(SecurityError::config("max_blocked", "must be at least 1"));
        }
        Ok(())
    }
}

/// What a recorded failure led to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthVerdict {
    /// Failures from this source within the window (capped at `max_failures`).
    pub source_failures: usize,
    /// Failures against this account within the window (capped at `max_failures`).
    pub account_failures: usize,
    /// Distinct accounts failed from this source within the window
    /// (capped at `stuffing_distinct_accounts`).
    pub distinct_accounts: usize,
    /// Whether the source is blocked now.
    pub blocked: bool,
    /// Incidents this failure raised (empty most of the time).
    pub incidents: Vec<IncidentType>,
}

#[derive(Debug)]
struct SourceState {
    failures: SlidingWindow,
    /// Account → last failure, at most `stuffing_distinct_accounts` entries.
    accounts: HashMap<String, Instant>,
}

struct AuthState {
    sources: BoundedMap<String, SourceState>,
    accounts: BoundedMap<String, SlidingWindow>,
    blocked: HashMap<String, Instant>,
}

/// Detects brute force and credential stuffing and keeps the block list the
/// server consults with [`is_blocked`](Self::is_blocked).
///
/// * `max_failures` failures from one source within `window` → a
///   `BruteForceAttack` incident (source: the IP) and a block of `block_duration`.
/// * `max_failures` failures against one account (from any sources) → a
///   `BruteForceAttack` incident with source `account:<name>` (the account is
///   not blocked: that would let anyone lock users out).
/// * `stuffing_distinct_accounts` different accounts failed from one source →
///   a `CredentialStuffing` incident and a block.
///
/// Memory is bounded by `max_tracked` and `max_blocked`; time follows tokio's clock.
pub struct BruteForceDetector {
    config: BruteForceConfig,
    state: Mutex<AuthState>,
    monitor: Option<Arc<SecurityMonitor>>,
}

impl std::fmt::Debug for BruteForceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BruteForceDetector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BruteForceDetector {
    /// A detector with `config`, rejected with an error naming the field if invalid.
    pub fn new(config: BruteForceConfig) -> Result<Self, SecurityError> {
        config.validate()?;
        Ok(Self {
            state: Mutex::new(AuthState {
                sources: BoundedMap::new(config.max_tracked),
                accounts: BoundedMap::new(config.max_tracked),
                blocked: HashMap::new(),
            }),
            config,
            monitor: None,
        })
    }

    /// Report incidents to `monitor`.
    pub fn with_monitor(mut self, monitor: Arc<SecurityMonitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a failed authentication of `account` from `source` (an IP address).
    pub async fn record_failure(
        &self,
        source: &str,
        account: &str,
    ) -> Result<AuthVerdict, SecurityError> {
        let cfg = &self.config;
        let now = Instant::now();
        let mut incidents = Vec::new();
        let verdict = {
            let mut state = self.lock();
            let src = state
                .sources
                .touch(&source.to_owned(), now, cfg.window, || SourceState {
                    failures: SlidingWindow::new(cfg.max_failures),
                    accounts: HashMap::new(),
                });
            let source_failures = src.failures.record(now, cfg.window);
            src.accounts
                .retain(|_, seen| now.saturating_duration_since(*seen) <= cfg.window);
            let known = src.accounts.contains_key(account);
            if known || src.accounts.len() < cfg.stuffing_distinct_accounts {
                src.accounts.insert(account.to_owned(), now);
            }
            let distinct_accounts = src.accounts.len();
            let stuffing = !known && distinct_accounts == cfg.stuffing_distinct_accounts;

            let acc = state
                .accounts
                .touch(&account.to_owned(), now, cfg.window, || {
                    SlidingWindow::new(cfg.max_failures)
                });
            let account_failures = acc.record(now, cfg.window);

            let mut block = false;
            if source_failures >= cfg.max_failures {
                block = true;
                incidents.push((
                    IncidentType::BruteForceAttack,
                    ThreatLevel::High,
                    source.to_owned(),
                    format!(
                        "{source_failures} failed authentications from {source} within {:?}",
                        cfg.window
                    ),
                ));
            }
            if account_failures >= cfg.max_failures {
                incidents.push((
                    IncidentType::BruteForceAttack,
                    ThreatLevel::High,
                    format!("account:{account}"),
                    format!(
                        "{account_failures} failed authentications against account {account} within {:?}",
                        cfg.window
                    ),
                ));
            }
            if stuffing {
                block = true;
                incidents.push((
                    IncidentType::CredentialStuffing,
                    ThreatLevel::Critical,
                    source.to_owned(),
                    format!(
                        "{distinct_accounts} distinct accounts failed from {source} within {:?}",
                        cfg.window
                    ),
                ));
            }
            if block && !cfg.block_duration.is_zero() {
                insert_block(
                    &mut state.blocked,
                    cfg.max_blocked,
                    source,
                    now + cfg.block_duration,
                    now,
                );
            }
            AuthVerdict {
                source_failures,
                account_failures,
                distinct_accounts,
                blocked: is_blocked_at(&state.blocked, source, now),
                incidents: incidents.iter().map(|i| i.0).collect(),
            }
        };
        if let Some(monitor) = &self.monitor {
            for (kind, level, source, description) in incidents {
                monitor
                    .report_incident(SecurityIncident::new(kind, level, source, description))
                    .await?;
            }
        }
        Ok(verdict)
    }

    /// Record a successful authentication: the account's failure count starts over
    /// (the source's does not, so stuffing from it is still seen).
    pub fn record_success(&self, _source: &str, account: &str) {
        let mut state = self.lock();
        if let Some(window) = state.accounts.get_mut(account) {
            window.clear();
        }
    }

    /// Whether `source` is on the block list now.
    pub fn is_blocked(&self, source: &str) -> bool {
        self.block_remaining(source).is_some()
    }

    /// How long `source` stays blocked, if it is.
    pub fn block_remaining(&self, source: &str) -> Option<Duration> {
        let state = self.lock();
        if state.blocked.is_empty() {
            return None;
        }
        let now = Instant::now();
        state
            .blocked
            .get(source)
            .filter(|until| **until > now)
            .map(|until| until.saturating_duration_since(now))
    }

    /// Block `source` for `duration` (extends, never shortens, an existing block).
    pub fn block(&self, source: &str, duration: Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        insert_block(
            &mut state.blocked,
            self.config.max_blocked,
            source,
            now + duration,
            now,
        );
    }

    /// Lift the block on `source`; returns whether it was blocked.
    pub fn unblock(&self, source: &str) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        state
            .blocked
            .remove(source)
            .is_some_and(|until| until > now)
    }

    /// Sources blocked now, with the time each block has left.
    pub fn blocked_sources(&self) -> Vec<(String, Duration)> {
        let now = Instant::now();
        let state = self.lock();
        let mut list: Vec<_> = state
            .blocked
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(s, until)| (s.clone(), until.saturating_duration_since(now)))
            .collect();
        list.sort();
        list
    }

    /// Sources and accounts tracked now (for capacity monitoring).
    pub fn tracked(&self) -> (usize, usize) {
        let state = self.lock();
        (state.sources.len(), state.accounts.len())
    }
}

fn is_blocked_at(blocked: &HashMap<String, Instant>, source: &str, now: Instant) -> bool {
    blocked.get(source).is_some_and(|until| *until > now)
}

fn insert_block(
    blocked: &mut HashMap<String, Instant>,
    cap: usize,
    source: &str,
    until: Instant,
    now: Instant,
) {
    if let Some(existing) = blocked.get_mut(source) {
        *existing = (*existing).max(until);
        return;
    }
    if blocked.len() >= cap {
        blocked.retain(|_, u| *u > now);
    }
    if blocked.len() >= cap {
        let soonest = blocked
            .iter()
            .min_by_key(|(_, u)| **u)
            .map(|(k, _)| k.clone());
        if let Some(k) = soonest {
            blocked.remove(&k);
        }
    }
    blocked.insert(source.to_owned(), until);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::IncidentFilter;

    fn detector() -> (BruteForceDetector, Arc<SecurityMonitor>) {
        let monitor = Arc::new(SecurityMonitor::new());
        let d = BruteForceDetector::new(BruteForceConfig::default())
            .unwrap()
            .with_monitor(Arc::clone(&monitor));
        (d, monitor)
    }

    #[tokio::test(start_paused = true)]
    async fn five_failures_in_ten_minutes_block_the_source_for_ten_minutes() {
        let (d, monitor) = detector();
        for i in 0..4 {
            let v = d.record_failure("10.0.0.1", "alice").await.unwrap();
            assert!(!v.blocked, "blocked after {} failures", i + 1);
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        let v = d.record_failure("10.0.0.1", "alice").await.unwrap();
        assert!(v.blocked);
        assert!(v.incidents.contains(&IncidentType::BruteForceAttack));
        assert!(d.is_blocked("10.0.0.1"));
        assert!(!d.is_blocked("10.0.0.2"));
        let listed = monitor.list_incidents(&IncidentFilter {
            source: Some("10.0.0.1".into()),
            ..Default::default()
        });
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].incident_type, IncidentType::BruteForceAttack);

        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(d.is_blocked("10.0.0.1"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!d.is_blocked("10.0.0.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_beyond_the_window_do_not_block() {
        let (d, _) = detector();
        for _ in 0..20 {
            let v = d.record_failure("10.0.0.1", "alice").await.unwrap();
            assert!(!v.blocked);
            tokio::time::advance(Duration::from_secs(151)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_accounts_from_one_source_is_credential_stuffing() {
        let (d, monitor) = detector();
        let config = BruteForceConfig {
            max_failures: 100,
            ..Default::default()
        };
        let d2 = BruteForceDetector::new(config)
            .unwrap()
            .with_monitor(Arc::clone(&monitor));
        drop(d);
        let mut last = None;
        for i in 0..10 {
            last = Some(
                d2.record_failure("10.9.9.9", &format!("user{i}"))
                    .await
                    .unwrap(),
            );
        }
        let v = last.unwrap();
        assert_eq!(v.distinct_accounts, 10);
        assert!(v.incidents.contains(&IncidentType::CredentialStuffing));
        assert!(v.blocked);
        let stuffing = monitor.list_incidents(&IncidentFilter {
            incident_type: Some(IncidentType::CredentialStuffing),
            ..Default::default()
        });
        assert_eq!(stuffing.len(), 1);
        assert_eq!(stuffing[0].threat_level, ThreatLevel::Critical);
    }

    #[tokio::test(start_paused = true)]
    async fn distributed_attack_on_one_account_is_reported_without_locking_it() {
        let (d, monitor) = detector();
        for i in 0..5 {
            let v = d
                .record_failure(&format!("10.0.1.{i}"), "bob")
                .await
                .unwrap();
            assert!(!v.blocked);
        }
        let hits = monitor.list_incidents(&IncidentFilter {
            source: Some("account:bob".into()),
            ..Default::default()
        });
        assert_eq!(hits.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_account_counter() {
        let (d, _) = detector();
        for _ in 0..4 {
            d.record_failure("10.0.0.1", "carol").await.unwrap();
        }
        d.record_success("10.0.0.1", "carol");
        let v = d.record_failure("10.0.0.2", "carol").await.unwrap();
        assert_eq!(v.account_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn tracked_sources_never_exceed_max_tracked() {
        let config = BruteForceConfig {
            max_tracked: 8,
            max_blocked: 4,
            max_failures: 1,
            ..Default::default()
        };
        let d = BruteForceDetector::new(config).unwrap();
        for i in 0..100 {
            d.record_failure(&format!("ip{i}"), &format!("acct{i}"))
                .await
                .unwrap();
        }
        let (sources, accounts) = d.tracked();
        assert!(sources <= 8 && accounts <= 8);
        assert!(d.blocked_sources().len() <= 4);
        assert!(d.is_blocked("ip99"));
    }

    #[tokio::test(start_paused = true)]
    async fn manual_block_and_unblock() {
        let (d, _) = detector();
        d.block("1.2.3.4", Duration::from_secs(30));
        assert_eq!(d.block_remaining("1.2.3.4"), Some(Duration::from_secs(30)));
        assert!(d.unblock("1.2.3.4"));
        assert!(!d.is_blocked("1.2.3.4"));
        assert!(!d.unblock("1.2.3.4"));
    }

    #[test]
    fn invalid_config_names_the_field() {
        let err = BruteForceDetector::new(BruteForceConfig {
            max_failures: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_failures"));
    }
}
