//! Rate-limit abuse: a source that keeps being refused by a limiter.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::SecurityError;
use crate::incident::{IncidentType, SecurityIncident, ThreatLevel};
use crate::monitor::SecurityMonitor;
use crate::window::{BoundedMap, SlidingWindow};

/// Configuration of a [`RateLimitAbuseDetector`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitAbuseConfig {
    /// Rejections within `window` that make a source abusive. At least 1.
    pub threshold: usize,
    /// The sliding window rejections are counted in. Seconds in config files.
    #[serde(with = "crate::duration_secs")]
    pub window: Duration,
    /// Most sources tracked; least recently active dropped first. At least 1.
    pub max_tracked: usize,
}

impl Default for RateLimitAbuseConfig {
    fn default() -> Self {
        Self {
            threshold: 100,
            window: Duration::from_secs(60),
            max_tracked: 100_000,
        }
    }
}

impl RateLimitAbuseConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SecurityError> {
        if self.threshold == 0 {
            return Err(SecurityError::config("threshold", "must be at least 1"));
        }
        if self.window.is_zero() {
            return Err(SecurityError::config("window", "must be positive"));
        }
        if self.max_tracked == 0 {
            return Err(SecurityError::config("max_tracked", "must be at least 1"));
        }
        Ok(())
    }
}

/// Turns limiter rejections into `RateLimitAbuse` incidents: a source refused
/// `threshold` times within `window` is reported (at most once per crossing;
/// the monitor folds repeats into the open incident).
pub struct RateLimitAbuseDetector {
    config: RateLimitAbuseConfig,
    sources: Mutex<BoundedMap<String, SlidingWindow>>,
    monitor: Option<Arc<SecurityMonitor>>,
}

impl std::fmt::Debug for RateLimitAbuseDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitAbuseDetector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RateLimitAbuseDetector {
    /// A detector with `config`, rejected with an error naming the field if invalid.
    pub fn new(config: RateLimitAbuseConfig) -> Result<Self, SecurityError> {
        config.validate()?;
        Ok(Self {
            sources: Mutex::new(BoundedMap::new(config.max_tracked)),
            config,
            monitor: None,
        })
    }

    /// Report incidents to `monitor`.
    pub fn with_monitor(mut self, monitor: Arc<SecurityMonitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Record that a limiter refused `source`. Returns `true` when this rejection
    /// crossed the threshold (an incident was raised).
    pub async fn record_rejection(&self, source: &str) -> Result<bool, SecurityError> {
        let cfg = &self.config;
        let now = Instant::now();
        let count = {
            let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
            let window = sources.touch(&source.to_owned(), now, cfg.window, || {
                SlidingWindow::new(cfg.threshold)
            });
            let count = window.record(now, cfg.window);
            // Report on the crossing, then count afresh: a source that keeps
            // going is reported again after another `threshold` rejections
            // (the monitor folds those repeats into its open incident).
            let crossed = count >= cfg.threshold;
            if crossed {
                window.clear();
            }
            crossed.then_some(count)
        };
        let Some(count) = count else { return Ok(false) };
        if let Some(monitor) = &self.monitor {
            monitor
                .report_incident(SecurityIncident::new(
                    IncidentType::RateLimitAbuse,
                    ThreatLevel::Medium,
                    source,
                    format!("{count} rate-limit rejections within {:?}", cfg.window),
                ))
                .await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reports_a_source_refused_past_the_threshold() {
        let monitor = Arc::new(SecurityMonitor::new());
        let d = RateLimitAbuseDetector::new(RateLimitAbuseConfig {
            threshold: 3,
            ..Default::default()
        })
        .unwrap()
        .with_monitor(Arc::clone(&monitor));
        assert!(!d.record_rejection("k").await.unwrap());
        assert!(!d.record_rejection("k").await.unwrap());
        assert!(d.record_rejection("k").await.unwrap());
        assert!(!d.record_rejection("other").await.unwrap());
        let dash = monitor.get_dashboard().await.unwrap();
        assert_eq!(
            dash.incidents_by_type.get(&IncidentType::RateLimitAbuse),
            Some(&1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejections_spread_out_are_not_abuse() {
        let d = RateLimitAbuseDetector::new(RateLimitAbuseConfig {
            threshold: 3,
            window: Duration::from_secs(10),
            ..Default::default()
        })
        .unwrap();
        for _ in 0..10 {
            assert!(!d.record_rejection("k").await.unwrap());
            tokio::time::advance(Duration::from_secs(6)).await;
        }
    }
}
