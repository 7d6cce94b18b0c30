//! A production AI-agent server built from the workspace's crates.
//!
//! * `POST /v1/conversations`, `GET /v1/conversations[/{id}]`,
//!   `DELETE /v1/conversations/{id}`, `POST /v1/conversations/{id}/messages`;
//! * admin: `GET /debug/state`, `/debug/rate_limiter`, `/debug/circuit_breakers`,
//!   `POST /admin/circuit-breakers/{name}/reset`;
//! * `/health`, `/health/live`, `/health/ready`; `/metrics` on the metrics port.
//!
//! The agent is a reducer ([`agent::AgentReducer`]) run by the core `Store`;
//! LLM calls go through rate limiter → circuit breaker → timeout → retry with
//! a budget; tool calls run in a bulkhead with a timeout.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = production_agent::config::Config::load(None, &|k| std::env::var(k).ok())?;
//! let app = production_agent::App::build(config).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app.router()).await?;
//! # Ok(())
//! # }
//! ```

pub mod agent;
pub mod auth;
pub mod config;
pub mod conversations;
pub mod http;
pub mod llm;
pub mod storage;
pub mod stream;
pub mod tools;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use composable_rust_agent_patterns::AgentError;
use composable_rust_agent_patterns::audit::{
    AuditLogger, InMemoryAuditLogger, PostgresAuditLogger, TracingAuditLogger,
};
use composable_rust_agent_patterns::health::{
    CheckOptions, ComponentHealth, FnHealthCheck, PostgresHealthCheck, ReadinessGate,
    SystemHealthCheck, probe_routes,
};
use composable_rust_agent_patterns::resilience::{
    CircuitState, KeyedRateLimiter, RateLimiterConfig,
};
use composable_rust_agent_patterns::security::{
    BruteForceConfig, BruteForceDetector, RateLimitAbuseConfig, RateLimitAbuseDetector,
    SecurityMonitor, detect,
};
use composable_rust_agent_patterns::shutdown::{
    ReadinessShutdownHandler, ServerHandle, ServerShutdownHandler, ShutdownCoordinator,
    ShutdownHandler,
};
use composable_rust_agent_patterns::tracing_support::HttpTraceLayer;
use tower::ServiceBuilder;

use crate::agent::{AgentReducer, Screen, ServerEnvironment};
use crate::auth::ApiKeys;
use crate::config::Config;
use crate::conversations::Conversations;
use crate::http::AppState;
use crate::storage::Storage;

/// The assembled server.
pub struct App {
    state: Arc<AppState>,
    health: Arc<SystemHealthCheck>,
    audit_store: Option<Arc<PostgresAuditLogger>>,
    /// The admin key generated at start when none was configured.
    pub generated_admin_key: Option<String>,
}

impl App {
    /// Build every part from the configuration.
    /// With `config.database_url` set, conversations live in Postgres
    /// (migrations run here); otherwise in memory.
    pub async fn build(config: Config) -> Result<Self, AgentError> {
        let mut keys = ApiKeys::from_entries(&config.api_keys).map_err(AgentError::Config)?;
        let generated_admin_key = keys.is_empty().then(|| keys.generate_admin());
        let storage = match &config.database_url {
            Some(url) => Storage::postgres(url, config.database_max_connections).await?,
            None => Storage::Memory(Conversations::new(config.agent.max_conversations)),
        };
        // The audit trail: Postgres (durable, group commit) next to the
        // conversations, or bounded memory; every event also goes to the
        // `audit` tracing target.
        let audit_store = match storage.pool() {
            Some(pool) => Some(Arc::new(
                PostgresAuditLogger::from_pool(pool.clone()).await?,
            )),
            None => None,
        };
        let primary: Arc<dyn AuditLogger> = match &audit_store {
            Some(store) => Arc::clone(store) as Arc<dyn AuditLogger>,
            None => Arc::new(InMemoryAuditLogger::new()),
        };
        let audit: Arc<dyn AuditLogger> = Arc::new(TracingAuditLogger::new(primary));
        let security = Arc::new(SecurityMonitor::new().with_audit_logger(Arc::clone(&audit)));
        let brute_force = BruteForceDetector::new(BruteForceConfig::default())?
            .with_monitor(Arc::clone(&security));
        let abuse = RateLimitAbuseDetector::new(RateLimitAbuseConfig::default())?
            .with_monitor(Arc::clone(&security));
        let env = Arc::new(ServerEnvironment::new(
            &config.llm,
            &config.agent,
            Arc::clone(&audit),
            Arc::clone(&security),
        )?);
        let screen: Screen = Arc::new(|content: &str| {
            let detection = detect(content);
            detection.is_injection().then(|| {
                format!(
                    "the message looks like a prompt-injection attempt ({})",
                    detection.top_family().unwrap_or("several signals")
                )
            })
        });
        let reducer = Arc::new(AgentReducer::new(config.agent.clone(), screen));
        let user_limiter = KeyedRateLimiter::new(
            "per_user",
            RateLimiterConfig {
                capacity: config.user_rate_limit.capacity,
                refill_rate: config.user_rate_limit.refill_rate,
            },
            config.user_rate_limit.max_keys,
        )?;
        let state = Arc::new(AppState {
            storage,
            audit,
            security,
            brute_force,
            abuse,
            config,
            keys,
            user_limiter,
            env,
            reducer,
        });
        let health = Arc::new(health_checks(&state));
        Ok(Self {
            state,
            health,
            audit_store,
            generated_admin_key,
        })
    }

    /// The gate that turns readiness to 503 while the server drains.
    pub fn readiness_gate(&self) -> ReadinessGate {
        self.health.readiness_gate()
    }

    /// The API router with health probes and the hardening layers.
    pub fn router(&self) -> Router {
        let limits = self.state.config.limits;
        http::routes()
            .merge(probe_routes(Arc::clone(&self.health)))
            .fallback(|| async {
                http::ApiError::from(AgentError::NotFound("no such route".into())).into_response()
            })
            .layer(axum::middleware::from_fn_with_state(
                limits.max_header_bytes,
                limit_headers,
            ))
            .layer(axum::middleware::from_fn_with_state(
                RequestCounters::register(),
                count_requests,
            ))
            .layer(
                ServiceBuilder::new()
                    .layer(axum::middleware::from_fn(error_trace_id))
                    .layer(HttpTraceLayer::new())
                    .layer(DefaultBodyLimit::max(limits.max_body_bytes))
                    .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                        limits.max_concurrent_requests,
                    ))
                    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                        StatusCode::GATEWAY_TIMEOUT,
                        limits.request_timeout,
                    )),
            )
            .with_state(Arc::clone(&self.state))
    }

    /// Serve the API on `api` (and `extra`, e.g. the metrics router, on its
    /// own listener) and register the Kubernetes shutdown sequence with
    /// `shutdown`: readiness 503 first, then (after the drain delay) stop
    /// accepting and wait for in-flight requests, then the remaining phases.
    /// Trigger it with `shutdown.shutdown()` or `shutdown_on_signal()`.
    pub fn serve(
        &self,
        api: tokio::net::TcpListener,
        extra: Option<(tokio::net::TcpListener, Router)>,
        shutdown: &ShutdownCoordinator,
    ) -> Running {
        shutdown.register(Arc::new(ReadinessShutdownHandler::new(
            self.readiness_gate(),
        )));
        let api_handle = ServerHandle::new();
        let api_task = tokio::spawn(
            api_handle.serve(
                axum::serve(
                    api,
                    self.router()
                        .into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(api_handle.stop_signal()),
            ),
        );
        shutdown.register(Arc::new(
            ServerShutdownHandler::new(api_handle).with_name("api_server"),
        ));
        let extra_task = extra.map(|(listener, router)| {
            let handle = ServerHandle::new();
            let task =
                tokio::spawn(handle.serve(
                    axum::serve(listener, router).with_graceful_shutdown(handle.stop_signal()),
                ));
            shutdown.register(Arc::new(
                ServerShutdownHandler::new(handle).with_name("metrics_server"),
            ));
            task
        });
        if let Some(store) = &self.audit_store {
            // Flushes queued audit events once the servers have stopped.
            shutdown.register(Arc::clone(store) as Arc<dyn ShutdownHandler>);
        }
        Running {
            api_task,
            extra_task,
        }
    }

    /// The shared state (for tests and the admin tooling).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }
}

/// Refuse requests whose headers add up to more than `max` bytes (431).
async fn limit_headers(
    axum::extract::State(max): axum::extract::State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > max {
        let body = serde_json::json!({"error": {"code": "invalid_input", "message": format!("request headers exceed {max} bytes")}});
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            axum::Json(body),
        )
            .into_response();
    }
    next.run(request).await
}

/// The server tasks started by [`App::serve`].
pub struct Running {
    api_task: tokio::task::JoinHandle<std::io::Result<()>>,
    extra_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Wait for the servers to return (after the shutdown sequence stopped them).
    pub async fn finished(self) -> std::io::Result<()> {
        let joined = |r: Result<std::io::Result<()>, tokio::task::JoinError>| {
            r.map_err(|e| std::io::Error::other(e.to_string()))?
        };
        joined(self.api_task.await)?;
        if let Some(task) = self.extra_task {
            joined(task.await)?;
        }
        Ok(())
    }
}

/// The readiness checks: the LLM path is non-critical (an open breaker makes
/// the pod degraded, still ready: the fallback or a recovery may serve).
fn health_checks(app: &AppState) -> SystemHealthCheck {
    let mut health = SystemHealthCheck::new();
    let breakers = app.env.breakers();
    health.add_check_with(
        Arc::new(FnHealthCheck::new("llm", move || {
            let open: Vec<String> = breakers
                .iter()
                .filter(|b| b.state() == CircuitState::Open)
                .map(|b| b.name().to_owned())
                .collect();
            async move {
                if open.is_empty() {
                    ComponentHealth::healthy("LLM circuit breakers closed")
                } else {
                    ComponentHealth::degraded(format!("circuit breaker open: {}", open.join(", ")))
                }
            }
        })),
        CheckOptions::non_critical(),
    );
    let audit = Arc::clone(&app.audit);
    health.add_check_with(
        Arc::new(FnHealthCheck::new("audit", move || {
            let audit = Arc::clone(&audit);
            async move {
                let h = audit.health().await;
                if h.healthy {
                    ComponentHealth::healthy(format!("{} event(s) queued", h.queued))
                } else {
                    ComponentHealth::unhealthy(
                        h.detail.unwrap_or_else(|| "audit store failing".into()),
                    )
                }
            }
        })),
        CheckOptions::critical(),
    );
    if let Some(pool) = app.storage.pool() {
        health.add_check_with(
            Arc::new(PostgresHealthCheck::new(pool.clone()).with_name("database")),
            CheckOptions::critical().with_startup(true),
        );
    }
    health
}

/// `agent_requests_total` and `agent_requests_failed_total` (5xx answers),
/// the series the guide's `HighErrorRate` alert divides.
async fn count_requests(
    axum::extract::State(counters): axum::extract::State<RequestCounters>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    counters.total.increment(1);
    if response.status().is_server_error() {
        counters.failed.increment(1);
    }
    response
}

/// Prometheus name of the answered-requests counter.
pub const REQUESTS_TOTAL: &str = "agent_requests_total";
/// Prometheus name of the 5xx-answers counter.
pub const REQUESTS_FAILED_TOTAL: &str = "agent_requests_failed_total";

/// The request counters' handles, registered once when the router is built
/// so a request only bumps them.
#[derive(Clone)]
struct RequestCounters {
    total: metrics::Counter,
    failed: metrics::Counter,
}

impl RequestCounters {
    fn register() -> Self {
        let counters = Self {
            total: metrics::counter!(REQUESTS_TOTAL),
            failed: metrics::counter!(REQUESTS_FAILED_TOTAL),
        };
        counters.total.increment(0);
        counters.failed.increment(0);
        counters
    }
}

/// Describe the server's own metrics to the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(REQUESTS_TOTAL, "HTTP requests answered by the agent API.");
    metrics::describe_counter!(
        REQUESTS_FAILED_TOTAL,
        "HTTP requests answered with a 5xx status."
    );
}

/// Put the request's trace id (set by the trace layer as `x-trace-id`) into
/// JSON error bodies, so a user's bug report leads straight to the trace.
async fn error_trace_id(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let Some(trace_id) = response
        .headers()
        .get(composable_rust_agent_patterns::tracing_support::TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (parts.status, "error body too large").into_response();
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut value) if value.get("error").is_some_and(serde_json::Value::is_object) => {
            value["error"]["trace_id"] = serde_json::Value::String(trace_id);
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            axum::body::Body::from(value.to_string())
        }
        _ => axum::body::Body::from(bytes),
    };
    axum::response::Response::from_parts(parts, body)
}
