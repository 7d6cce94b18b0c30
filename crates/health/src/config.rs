//! Configuration of a [`SystemHealthCheck`](crate::SystemHealthCheck) and of
//! single checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::HealthError;

/// How much the probe endpoints reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetailLevel {
    /// Only the overall `status`: safe on a public port.
    #[default]
    Summary,
    /// The overall `status` plus every check with its status, output, time
    /// and latency: for an internal port or an operator.
    Full,
}

/// Settings of a [`SystemHealthCheck`](crate::SystemHealthCheck).
///
/// Durations are written in milliseconds in serialized form
/// (`check_timeout_ms`, `cache_ttl_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Longest time one check may take before it is reported unhealthy.
    /// Must be greater than zero. Default 2 s.
    #[serde(rename = "check_timeout_ms", with = "millis")]
    pub check_timeout: Duration,
    /// How long a check's result is reused before the check runs again, so
    /// probe traffic cannot hammer a dependency. Zero disables caching.
    /// Default 1 s.
    #[serde(rename = "cache_ttl_ms", with = "millis")]
    pub cache_ttl: Duration,
    /// What the probe bodies show. Default [`DetailLevel::Summary`].
    pub detail: DetailLevel,
    /// Most checks that may be registered. Must be greater than zero.
    /// Default 64.
    pub max_checks: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check_timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(1),
            detail: DetailLevel::Summary,
            max_checks: 64,
        }
    }
}

impl HealthConfig {
    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), HealthError> {
        if self.check_timeout.is_zero() {
            return Err(HealthError::invalid_config(
                "check_timeout",
                "must be greater than zero",
            ));
        }
        if self.max_checks == 0 {
            return Err(HealthError::invalid_config(
                "max_checks",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// How one registered check counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckOptions {
    /// A failed critical check makes the system unhealthy and not ready; a
    /// failed non-critical one only degrades it. Default `true`.
    pub critical: bool,
    /// Whether the startup probe waits for this check to pass once.
    /// Default `true`.
    pub startup: bool,
    /// Overrides [`HealthConfig::check_timeout`] for this check.
    #[serde(rename = "timeout_ms", with = "opt_millis")]
    pub timeout: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            critical: true,
            startup: true,
            timeout: None,
        }
    }
}

impl CheckOptions {
    /// Options of a critical check (the default).
    pub fn critical() -> Self {
        Self::default()
    }

    /// Options of a non-critical check: its failure degrades the system but
    /// keeps it ready, and startup does not wait for it.
    pub fn non_critical() -> Self {
        Self {
            critical: false,
            startup: false,
            timeout: None,
        }
    }

    /// Sets a timeout for this check.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets whether startup waits for this check.
    #[must_use]
    pub fn with_startup(mut self, startup: bool) -> Self {
        self.startup = startup;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), HealthError> {
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(HealthError::invalid_config(
                "timeout",
                "must be greater than zero",
            ));
        }
        Ok(())
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

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_with_two_second_timeout() {
        let config = HealthConfig::default();
        assert_eq!(config.check_timeout, Duration::from_secs(2));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn zero_timeout_is_rejected_naming_the_field() {
        let config = HealthConfig {
            check_timeout: Duration::ZERO,
            ..HealthConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("check_timeout"), "{err}");
    }

    #[test]
    fn zero_max_checks_is_rejected_naming_the_field() {
        let config = HealthConfig {
            max_checks: 0,
            ..HealthConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("max_checks")
        );
    }

    #[test]
    fn config_round_trips_through_json_in_milliseconds() {
        let config = HealthConfig {
            check_timeout: Duration::from_millis(1500),
            cache_ttl: Duration::ZERO,
            detail: DetailLevel::Full,
            max_checks: 8,
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["check_timeout_ms"], 1500);
        assert_eq!(json["detail"], "full");
        let back: HealthConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
        let partial: HealthConfig = serde_json::from_str(r#"{"cache_ttl_ms": 250}"#).unwrap();
        assert_eq!(partial.cache_ttl, Duration::from_millis(250));
        assert_eq!(partial.check_timeout, Duration::from_secs(2));
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        assert!(serde_json::from_str::<HealthConfig>(r#"{"timeout": 1}"#).is_err());
    }

    #[test]
    fn zero_check_timeout_option_is_rejected() {
        let options = CheckOptions::critical().with_timeout(Duration::ZERO);
        assert!(
            options
                .validate()
                .unwrap_err()
                .to_string()
                .contains("timeout")
        );
    }
}
