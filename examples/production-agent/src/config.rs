//! Server configuration: embedded defaults, a TOML file, then environment overrides.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the server can be told. Every field has a default, so the
/// server runs with no file and no environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// API listen address (`AGENT_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Metrics listen address (`AGENT_METRICS_ADDR`).
    pub metrics_addr: SocketAddr,
    /// API keys as `user_id:role:key` entries (`AGENT_API_KEYS`, comma-separated).
    pub api_keys: Vec<String>,
    /// The LLM settings.
    pub llm: LlmConfig,
    /// Per-user API rate limit.
    pub user_rate_limit: RateConfig,
    /// Agent loop settings.
    pub agent: AgentConfig,
    /// HTTP hardening limits.
    pub limits: LimitsConfig,
    /// How long shutdown may take in all, after the drain delay.
    #[serde(with = "secs")]
    pub shutdown_timeout: Duration,
    /// How long readiness answers 503 before the server stops accepting, so
    /// the load balancer can notice (Kubernetes: a few seconds;
    /// `terminationGracePeriodSeconds` must exceed drain_delay + shutdown_timeout).
    #[serde(with = "secs")]
    pub drain_delay: Duration,
    /// Log as JSON lines (production) rather than human-readable text.
    pub json_logs: bool,
    /// PostgreSQL for conversations (`DATABASE_URL`); in memory when unset.
    pub database_url: Option<String>,
    /// Connections in the database pool, shared by conversations and the
    /// audit trail (whose writer keeps one per batch in flight, two by
    /// default): at least 3.
    pub database_max_connections: u32,
}

/// Which model answers, and how calls to it are protected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `offline`, `anthropic` or `openai` (OpenAI-compatible chat completions).
    /// Default: `anthropic` when `ANTHROPIC_API_KEY` is set, else `offline`.
    pub provider: String,
    /// Model name sent to the provider.
    pub model: String,
    /// Base URL of the provider's API.
    pub base_url: String,
    /// API key (`ANTHROPIC_API_KEY` / `OPENAI_API_KEY`).
    pub api_key: Option<String>,
    /// Provider used when the primary fails with a temporary error: `offline`,
    /// `anthropic`, `openai`, or empty for none.
    pub fallback: String,
    /// Time limit of one LLM call.
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// Attempts per LLM call (1 = no retry).
    pub max_attempts: u32,
    /// LLM calls per second across all users.
    pub rate_per_second: f64,
    /// Burst of LLM calls.
    pub burst: u64,
    /// Consecutive failures that open the LLM circuit breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open.
    #[serde(with = "secs")]
    pub open_timeout: Duration,
    /// Largest reply accepted from the provider, in tokens.
    pub max_tokens: u32,
}

/// A token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Burst size.
    pub capacity: u64,
    /// Tokens per second.
    pub refill_rate: f64,
    /// Users tracked at most (memory bound).
    pub max_keys: usize,
}

/// The agent loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The system prompt every conversation starts with.
    pub system_prompt: String,
    /// Messages kept per conversation (the system prompt is always kept).
    pub max_messages: usize,
    /// LLM ↔ tool round trips per user message.
    pub max_steps: u32,
    /// Conversations kept in memory at most.
    pub max_conversations: usize,
    /// Tool calls running at once.
    pub tool_concurrency: usize,
    /// Time limit of one tool call.
    #[serde(with = "secs")]
    pub tool_timeout: Duration,
}

/// Limits on what clients may send.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest total size of the request headers, in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Largest message content, in characters.
    pub max_content_chars: usize,
    /// Requests served at once.
    pub max_concurrent_requests: usize,
    /// Time limit of one request.
    #[serde(with = "secs")]
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            api_keys: Vec::new(),
            llm: LlmConfig::default(),
            user_rate_limit: RateConfig::default(),
            agent: AgentConfig::default(),
            limits: LimitsConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            json_logs: false,
            database_url: None,
            database_max_connections: 10,
        }
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            provider: String::new(),
            model: "claude-sonnet-4-5".into(),
            base_url: String::new(),
            api_key: None,
            fallback: String::new(),
            timeout: Duration::from_secs(30),
            max_attempts: 3,
            rate_per_second: 20.0,
            burst: 200,
            failure_threshold: 5,
            open_timeout: Duration::from_secs(60),
            max_tokens: 1024,
        }
    }
}

impl Default for RateConfig {
    /// The guide's production tuning: 200 burst, 20 per second.
    fn default() -> Self {
        Self {
            capacity: 200,
            refill_rate: 20.0,
            max_keys: 100_000,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            system_prompt: "You are a helpful assistant. Use the calculator tool for arithmetic and the clock tool for the time.".into(),
            max_messages: 100,
            max_steps: 5,
            max_conversations: 10_000,
            tool_concurrency: 100,
            tool_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_content_chars: 32_000,
            max_concurrent_requests: 1024,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// A configuration problem; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (it names the field).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {field}: {problem}")]
    Invalid {
        /// The field, as written in the file or environment.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

impl Config {
    /// Defaults, then the file (if any), then the environment; validated.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let display = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: display.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: display,
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("AGENT_HTTP_ADDR") {
            self.http_addr = v
                .parse()
                .map_err(|e| invalid("AGENT_HTTP_ADDR", format!("{e} ({v:?})")))?;
        }
        if let Some(v) = env("AGENT_METRICS_ADDR") {
            self.metrics_addr = v
                .parse()
                .map_err(|e| invalid("AGENT_METRICS_ADDR", format!("{e} ({v:?})")))?;
        }
        if let Some(v) = env("AGENT_API_KEYS") {
            self.api_keys = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("AGENT_LLM_PROVIDER") {
            self.llm.provider = v;
        }
        if let Some(v) = env("AGENT_LLM_MODEL") {
            self.llm.model = v;
        }
        if let Some(v) = env("AGENT_LLM_BASE_URL") {
            self.llm.base_url = v;
        }
        if let Some(v) = env("AGENT_LLM_FALLBACK") {
            self.llm.fallback = v;
        }
        if let Some(v) = env("DATABASE_URL").filter(|v| !v.is_empty()) {
            self.database_url = Some(v);
        }
        if let Some(v) = env("AGENT_JSON_LOGS") {
            self.json_logs = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if self.llm.provider.is_empty() {
            self.llm.provider = if env("ANTHROPIC_API_KEY").is_some() {
                "anthropic".into()
            } else if env("OPENAI_BASE_URL").is_some() {
                "openai".into()
            } else {
                "offline".into()
            };
        }
        if self.llm.api_key.is_none() {
            self.llm.api_key = match self.llm.provider.as_str() {
                "anthropic" => env("ANTHROPIC_API_KEY"),
                "openai" => env("OPENAI_API_KEY"),
                _ => None,
            };
        }
        if self.llm.base_url.is_empty() {
            self.llm.base_url = match self.llm.provider.as_str() {
                "anthropic" => "https://api.anthropic.com".into(),
                "openai" => {
                    env("OPENAI_BASE_URL").unwrap_or_else(|| "http://127.0.0.1:11434/v1".into())
                }
                _ => String::new(),
            };
        }
        Ok(())
    }

    /// Check ranges; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, provider) in [
            ("llm.provider", &self.llm.provider),
            ("llm.fallback", &self.llm.fallback),
        ] {
            let known = matches!(provider.as_str(), "offline" | "anthropic" | "openai");
            let no_fallback = field == "llm.fallback" && provider.is_empty();
            if !known && !no_fallback {
                return Err(invalid(
                    field,
                    format!("must be offline, anthropic or openai (got {provider:?})"),
                ));
            }
        }
        if self.llm.provider == "anthropic" && self.llm.api_key.as_deref().is_none_or(str::is_empty)
        {
            return Err(invalid(
                "llm.api_key",
                "the anthropic provider needs ANTHROPIC_API_KEY",
            ));
        }
        if self.database_max_connections < 3 {
            return Err(invalid(
                "database_max_connections",
                "must be at least 3 (the audit writer keeps two connections, reads need one)",
            ));
        }
        if self.llm.max_attempts == 0 {
            return Err(invalid("llm.max_attempts", "must be at least 1"));
        }
        if self.llm.failure_threshold == 0 {
            return Err(invalid("llm.failure_threshold", "must be at least 1"));
        }
        if self.llm.rate_per_second.is_nan()
            || self.llm.rate_per_second <= 0.0
            || self.llm.burst == 0
        {
            return Err(invalid(
                "llm.rate_per_second",
                "rate and burst must be above 0",
            ));
        }
        if self.llm.timeout.is_zero() {
            return Err(invalid("llm.timeout", "must be above 0"));
        }
        let rate = self.user_rate_limit.refill_rate;
        if self.user_rate_limit.capacity == 0
            || rate.is_nan()
            || rate <= 0.0
            || self.user_rate_limit.max_keys == 0
        {
            return Err(invalid(
                "user_rate_limit",
                "capacity, refill_rate and max_keys must be above 0",
            ));
        }
        if self.agent.max_messages < 2 {
            return Err(invalid("agent.max_messages", "must be at least 2"));
        }
        if self.agent.max_steps == 0 {
            return Err(invalid("agent.max_steps", "must be at least 1"));
        }
        if self.agent.max_conversations == 0 || self.agent.tool_concurrency == 0 {
            return Err(invalid(
                "agent.max_conversations",
                "and agent.tool_concurrency must be at least 1",
            ));
        }
        if self.limits.max_body_bytes < 64
            || self.limits.max_content_chars == 0
            || self.limits.max_concurrent_requests == 0
        {
            return Err(invalid(
                "limits",
                "max_body_bytes ≥ 64, max_content_chars and max_concurrent_requests ≥ 1",
            ));
        }
        for entry in &self.api_keys {
            crate::auth::parse_key_entry(entry).map_err(|problem| invalid("api_keys", problem))?;
        }
        Ok(())
    }
}

/// Durations as (fractional) seconds in the file.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// What `--print-config` shows in place of a secret.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// This configuration with its secrets replaced by [`REDACTED`]: the API
    /// keys, the LLM key and the database URL's password. Printed, it is
    /// safe to share and to keep as a template.
    pub fn redacted(&self) -> Self {
        let mut out = self.clone();
        out.api_keys = vec![REDACTED.to_owned(); self.api_keys.len()];
        out.llm.api_key = self.llm.api_key.as_ref().map(|_| REDACTED.to_owned());
        out.database_url = self.database_url.as_deref().map(redact_url_password);
        out
    }
}

/// `scheme://user:password@host/…` with the password replaced; other URLs as
/// they are.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_every_secret_and_keeps_the_rest() {
        let mut c = Config {
            api_keys: vec!["alice:user:k1".into(), "root:admin:k2".into()],
            database_url: Some("postgres://agent:hunter2@db:5432/agent?sslmode=require".into()),
            ..Config::default()
        };
        c.llm.api_key = Some("sk-secret".into());
        let r = c.redacted();
        let text = toml::to_string_pretty(&r).unwrap();
        for secret in ["k1", "k2", "sk-secret", "hunter2"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert_eq!(r.api_keys.len(), 2);
        assert_eq!(
            r.database_url.as_deref(),
            Some("postgres://agent:<redacted>@db:5432/agent?sslmode=require")
        );
        assert_eq!(r.http_addr, c.http_addr);
        assert_eq!(
            redact_url_password("postgres://db/agent"),
            "postgres://db/agent"
        );
        assert_eq!(
            redact_url_password("postgres://u@db/a"),
            "postgres://u@db/a"
        );
        assert_eq!(redact_url_password("not a url"), "not a url");
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_run_offline_on_the_documented_ports() {
        let c = Config::load(None, &no_env).unwrap();
        assert_eq!(c.llm.provider, "offline");
        assert_eq!(c.http_addr.port(), 8080);
        assert_eq!(c.metrics_addr.port(), 9090);
        assert_eq!(c.user_rate_limit.capacity, 200);
    }

    #[test]
    fn environment_overrides_the_file_and_errors_name_the_field() {
        let env = |k: &str| match k {
            "AGENT_HTTP_ADDR" => Some("127.0.0.1:1234".to_string()),
            "AGENT_API_KEYS" => Some("alice:user:alice-key-1, bob:admin:bob-key-22".to_string()),
            _ => None,
        };
        let c = Config::load(None, &env).unwrap();
        assert_eq!(c.http_addr.port(), 1234);
        assert_eq!(c.api_keys.len(), 2);

        let bad = |k: &str| (k == "AGENT_HTTP_ADDR").then(|| "nope".to_string());
        let err = Config::load(None, &bad).unwrap_err().to_string();
        assert!(err.contains("AGENT_HTTP_ADDR"), "{err}");

        let bad_key = |k: &str| (k == "AGENT_API_KEYS").then(|| "alice:root:k".to_string());
        let err = Config::load(None, &bad_key).unwrap_err().to_string();
        assert!(err.contains("api_keys"), "{err}");
    }

    #[test]
    fn unknown_fields_in_the_file_are_rejected() {
        let dir = std::env::temp_dir().join(format!("agent-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "http_addr = \"127.0.0.1:1\"\nno_such_field = 3\n").unwrap();
        let err = Config::load(Some(&path), &no_env).unwrap_err().to_string();
        assert!(err.contains("no_such_field"), "{err}");
        std::fs::write(&path, "[agent]\nmax_messages = 1\n").unwrap();
        let err = Config::load(Some(&path), &no_env).unwrap_err().to_string();
        assert!(err.contains("agent.max_messages"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
