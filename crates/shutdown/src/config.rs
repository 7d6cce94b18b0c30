//! [`ShutdownConfig`]: the deadline, the per-handler timeout and the drain
//! delay.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ShutdownError;

/// Timing of a shutdown.
///
/// The whole shutdown takes at most `drain_delay + timeout`: Kubernetes'
/// `terminationGracePeriodSeconds` must exceed that sum (plus the time of
/// any `preStop` hook), or the kubelet sends SIGKILL before the last phase
/// has run. With the defaults and a 5 s drain delay, 30 + 5 = 35 s: set the
/// grace period to 40 s or more.
///
/// Durations are written in milliseconds in serialized form (`timeout_ms`,
/// `handler_timeout_ms`, `drain_delay_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Overall deadline for the phases after the drain delay. Must be
    /// greater than zero. Default 30 s.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Longest time one handler may take. Must be greater than zero and at
    /// most `timeout`. Default 10 s.
    #[serde(rename = "handler_timeout_ms", with = "millis")]
    pub handler_timeout: Duration,
    /// Time between closing readiness and signalling the server to stop
    /// accepting, so the load balancer notices the pod is leaving before its
    /// connections are refused. Default 0 (no delay).
    #[serde(rename = "drain_delay_ms", with = "millis")]
    pub drain_delay: Duration,
    /// Most handlers that may be registered. Must be greater than zero.
    /// Default 64.
    pub max_handlers: usize,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            max_handlers: 64,
        }
    }
}

impl ShutdownConfig {
    /// The default configuration with an overall `timeout`; the per-handler
    /// timeout is 10 s or `timeout`, whichever is smaller.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            handler_timeout: timeout.min(Duration::from_secs(10)),
            ..Self::default()
        }
    }

    /// Sets the drain delay (builder style).
    #[must_use]
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Sets the per-handler timeout (builder style).
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), ShutdownError> {
        let invalid = |field, reason| Err(ShutdownError::InvalidConfig { field, reason });
        if self.timeout.is_zero() {
            return invalid("timeout", "must be greater than zero");
        }
        if self.handler_timeout.is_zero() {
            return invalid("handler_timeout", "must be greater than zero");
        }
        if self.handler_timeout > self.timeout {
            return invalid("handler_timeout", "must not exceed `timeout`");
        }
        if self.max_handlers == 0 {
            return invalid("max_handlers", "must be greater than zero");
        }
        Ok(())
    }

    /// The longest a shutdown can take: `drain_delay + timeout`. The pod's
    /// `terminationGracePeriodSeconds` must be larger.
    pub fn max_duration(&self) -> Duration {
        self.drain_delay.saturating_add(self.timeout)
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_timeout_caps_the_handler_timeout_at_the_deadline() {
        let short = ShutdownConfig::with_timeout(Duration::from_secs(3));
        assert_eq!(short.handler_timeout, Duration::from_secs(3));
        assert!(short.validate().is_ok());
        let long = ShutdownConfig::with_timeout(Duration::from_secs(60));
        assert_eq!(long.handler_timeout, Duration::from_secs(10));
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (ShutdownConfig::with_timeout(Duration::ZERO), "timeout"),
            (
                ShutdownConfig::default().handler_timeout(Duration::ZERO),
                "handler_timeout",
            ),
            (
                ShutdownConfig::default().handler_timeout(Duration::from_secs(31)),
                "handler_timeout",
            ),
            (
                ShutdownConfig {
                    max_handlers: 0,
                    ..ShutdownConfig::default()
                },
                "max_handlers",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert!(
                matches!(err, ShutdownError::InvalidConfig { field: f, .. } if f == field),
                "{err}"
            );
        }
    }

    #[test]
    fn max_duration_adds_drain_delay_and_timeout() {
        let config = ShutdownConfig::default().drain_delay(Duration::from_secs(5));
        assert_eq!(config.max_duration(), Duration::from_secs(35));
    }

    #[test]
    fn config_reads_milliseconds_and_fills_defaults() {
        let config: ShutdownConfig = serde_json::from_str(r#"{"drain_delay_ms": 5000}"#).unwrap();
        assert_eq!(config.drain_delay, Duration::from_secs(5));
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert!(serde_json::from_str::<ShutdownConfig>(r#"{"delay": 1}"#).is_err());
    }
}
