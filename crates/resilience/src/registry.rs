//! Keyed circuit breakers (per host, per model …) in a bounded registry.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use crate::config_error::ConfigError;

/// The registry is full of breakers that still hold state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker registry '{name}' holds its maximum of {max} breakers")]
pub struct RegistryFull {
    /// The registry's name.
    pub name: String,
    /// Its bound.
    pub max: usize,
}

impl From<RegistryFull> for agent_patterns_core::AgentError {
    fn from(e: RegistryFull) -> Self {
        agent_patterns_core::AgentError::Unavailable(e.to_string())
    }
}

/// One breaker per key, created on first use from a shared configuration,
/// at most `max_breakers` of them.
///
/// A breaker that is closed with no failure streak holds no information, so
/// it is *idle* and may be dropped to make room (a new one starts the same
/// way). When every breaker holds state (open, half-open, or counting
/// failures) and the registry is full, a new key is refused rather than
/// forgetting a breaker that is protecting a failing dependency.
///
/// ```
/// use agent_patterns_resilience::*;
///
/// let per_model = CircuitBreakerRegistry::new("llm", CircuitBreakerConfig::default(), 100).unwrap();
/// let sonnet = per_model.get("claude-sonnet").unwrap();
/// let again = per_model.get("claude-sonnet").unwrap();
/// assert!(std::sync::Arc::ptr_eq(&sonnet, &again));
/// assert_eq!(sonnet.name(), "llm:claude-sonnet");
/// ```
#[derive(Debug)]
pub struct CircuitBreakerRegistry {
    name: String,
    config: CircuitBreakerConfig,
    max: usize,
    breakers: RwLock<HashMap<String, Arc<CircuitBreaker>>>,
}

impl CircuitBreakerRegistry {
    /// A registry named `name` whose breakers use `config`; breaker `key` is
    /// named `"{name}:{key}"` (its metrics label).
    pub fn new(
        name: impl Into<String>,
        config: CircuitBreakerConfig,
        max_breakers: usize,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if max_breakers == 0 {
            return Err(ConfigError::new(
                "circuit breaker registry",
                "max_breakers",
                "must be at least 1",
            ));
        }
        Ok(Self {
            name: name.into(),
            config,
            max: max_breakers,
            breakers: RwLock::new(HashMap::new()),
        })
    }

    /// The breaker for `key`, created if needed.
    pub fn get(&self, key: &str) -> Result<Arc<CircuitBreaker>, RegistryFull> {
        if let Some(b) = self
            .breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Ok(Arc::clone(b));
        }
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get(key) {
            return Ok(Arc::clone(b));
        }
        if map.len() >= self.max {
            map.retain(|_, b| !is_idle(b));
            if map.len() >= self.max {
                return Err(RegistryFull {
                    name: self.name.clone(),
                    max: self.max,
                });
            }
        }
        let breaker = Arc::new(CircuitBreaker::new(
            format!("{}:{key}", self.name),
            self.config,
        ));
        map.insert(key.to_owned(), Arc::clone(&breaker));
        Ok(breaker)
    }

    /// Every breaker, for dashboards.
    pub fn all(&self) -> Vec<Arc<CircuitBreaker>> {
        self.breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Breakers held now.
    pub fn len(&self) -> usize {
        self.breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no breaker is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Closed, no failure streak, and used by nobody else.
fn is_idle(b: &Arc<CircuitBreaker>) -> bool {
    b.state() == CircuitState::Closed
        && b.metrics().consecutive_failures == 0
        && Arc::strong_count(b) == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_and_keeps_breakers_that_hold_state() {
        let config = CircuitBreakerConfig {
            failure_threshold: 1,
            ..CircuitBreakerConfig::default()
        };
        let registry = CircuitBreakerRegistry::new("hosts", config, 2).unwrap();
        registry.get("a").unwrap().record_failure().await; // open
        drop(registry.get("b").unwrap()); // idle
        // "c" evicts the idle "b", not the open "a".
        let c = registry.get("c").unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.get("a").unwrap().state(), CircuitState::Open);
        // "a" open and "c" in use: no room.
        assert!(registry.get("d").is_err());
        drop(c);
        assert!(registry.get("d").is_ok());
    }

    #[test]
    fn zero_capacity_is_refused() {
        assert_eq!(
            CircuitBreakerRegistry::new("x", CircuitBreakerConfig::default(), 0)
                .unwrap_err()
                .field,
            "max_breakers"
        );
    }
}
