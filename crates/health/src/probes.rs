//! The three Kubernetes probes as axum routes, answering in the
//! `application/health+json` format of the IETF health-check draft.
//!
//! | Path            | Probe     | 200 when                                             |
//! |-----------------|-----------|------------------------------------------------------|
//! | `/health`       | startup   | every startup check has passed at least once         |
//! | `/health/live`  | liveness  | always: the process answers; no dependency is asked  |
//! | `/health/ready` | readiness | not draining and no critical check is unhealthy      |
//!
//! Otherwise they answer 503. The body's `status` is `pass`, `warn` (degraded
//! but serving) or `fail`; with [`DetailLevel::Full`] it also lists `checks`
//! keyed by component, each with `status`, `output` (for `warn`/`fail`),
//! `time` (RFC 3339) and the check's latency as `observedValue` in
//! `observedUnit` `ms`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::SecondsFormat;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::{DetailLevel, HealthReport, HealthStatus, SystemHealthCheck};

/// The media type of the probe bodies.
pub const HEALTH_JSON: &str = "application/health+json";

/// A probe's answer: the HTTP status and the `application/health+json` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResponse {
    /// 200 or 503.
    pub status: StatusCode,
    /// The body.
    pub body: Value,
}

impl ProbeResponse {
    fn new(ok: bool, status: HealthStatus, output: Option<String>, checks: Option<Value>) -> Self {
        let mut body = Map::new();
        body.insert("status".into(), status.as_health_json().into());
        if let Some(output) = output {
            body.insert("output".into(), output.into());
        }
        if let Some(checks) = checks {
            body.insert("checks".into(), checks);
        }
        Self {
            status: if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            body: Value::Object(body),
        }
    }
}

impl IntoResponse for ProbeResponse {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            self.body.to_string(),
        )
            .into_response()
    }
}

impl SystemHealthCheck {
    /// The liveness probe: always 200 `pass`. It runs no check, so a slow or
    /// failing dependency can never get a healthy process restarted.
    pub fn liveness(&self) -> ProbeResponse {
        ProbeResponse::new(true, HealthStatus::Healthy, None, None)
    }

    /// The readiness probe: 503 while draining (without running checks) or
    /// while a critical check is unhealthy; 200 otherwise, with `warn` when
    /// degraded.
    pub async fn readiness(&self) -> ProbeResponse {
        if self.is_draining() {
            return ProbeResponse::new(
                false,
                HealthStatus::Unhealthy,
                Some("draining: shutting down".into()),
                None,
            );
        }
        let report = self.report().await;
        let ok = report.status.is_available();
        let output = (!ok).then(|| "a critical check is failing".to_owned());
        ProbeResponse::new(ok, report.status, output, self.checks_body(&report))
    }

    /// The startup probe: 200 once every startup check has passed at least
    /// once; from then on it answers without running checks.
    pub async fn startup(&self) -> ProbeResponse {
        if self.is_started() {
            return ProbeResponse::new(true, HealthStatus::Healthy, None, None);
        }
        let report = self.report().await;
        if self.is_started() {
            return ProbeResponse::new(
                true,
                HealthStatus::Healthy,
                None,
                self.checks_body(&report),
            );
        }
        ProbeResponse::new(
            false,
            HealthStatus::Unhealthy,
            Some("startup checks have not all passed yet".into()),
            self.checks_body(&report),
        )
    }

    fn checks_body(&self, report: &HealthReport) -> Option<Value> {
        if self.config().detail != DetailLevel::Full {
            return None;
        }
        let checks = report
            .checks
            .iter()
            .map(|(name, check)| {
                let health = &check.health;
                let mut entry = Map::new();
                entry.insert("componentId".into(), name.clone().into());
                entry.insert("status".into(), health.status.as_health_json().into());
                if health.status != HealthStatus::Healthy {
                    entry.insert("output".into(), health.message.clone().into());
                }
                entry.insert(
                    "time".into(),
                    health
                        .observed_at
                        .to_rfc3339_opts(SecondsFormat::Millis, true)
                        .into(),
                );
                entry.insert(
                    "observedValue".into(),
                    json!(health.latency.as_secs_f64() * 1000.0),
                );
                entry.insert("observedUnit".into(), "ms".into());
                entry.insert("critical".into(), check.critical.into());
                (name.clone(), Value::Array(vec![Value::Object(entry)]))
            })
            .collect::<Map<_, _>>();
        Some(Value::Object(checks))
    }
}

/// The probe routes `/health`, `/health/live` and `/health/ready`, ready to
/// [`merge`](Router::merge) into an application's router of any state type.
///
/// ```
/// use std::sync::Arc;
/// use agent_patterns_health::*;
///
/// let health = Arc::new(SystemHealthCheck::new());
/// let app: axum::Router = axum::Router::new().merge(probe_routes(health));
/// # let _ = app;
/// ```
pub fn probe_routes<S>(health: Arc<SystemHealthCheck>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/health", get(startup_handler))
        .route("/health/live", get(liveness_handler))
        .route("/health/ready", get(readiness_handler))
        .with_state(health)
}

async fn startup_handler(State(health): State<Arc<SystemHealthCheck>>) -> ProbeResponse {
    health.startup().await
}

async fn liveness_handler(State(health): State<Arc<SystemHealthCheck>>) -> ProbeResponse {
    health.liveness()
}

async fn readiness_handler(State(health): State<Arc<SystemHealthCheck>>) -> ProbeResponse {
    health.readiness().await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{CheckOptions, ComponentHealth, FnHealthCheck, HealthConfig};

    fn full() -> SystemHealthCheck {
        SystemHealthCheck::with_config(HealthConfig {
            detail: DetailLevel::Full,
            cache_ttl: Duration::ZERO,
            ..HealthConfig::default()
        })
        .unwrap()
    }

    async fn get(health: &Arc<SystemHealthCheck>, path: &str) -> (StatusCode, String, Value) {
        let app: Router = probe_routes(Arc::clone(health));
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn readiness_is_200_pass_with_full_check_details() {
        let mut system = full();
        system.add_check(Arc::new(FnHealthCheck::new("database", || async {
            ComponentHealth::healthy("Database connected")
        })));
        let health = Arc::new(system);
        let (status, content_type, body) = get(&health, "/health/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, HEALTH_JSON);
        assert_eq!(body["status"], "pass");
        let db = &body["checks"]["database"][0];
        assert_eq!(db["status"], "pass");
        assert_eq!(db["observedUnit"], "ms");
        assert!(db["observedValue"].is_number());
        assert!(
            chrono::DateTime::parse_from_rfc3339(db["time"].as_str().unwrap()).is_ok(),
            "{db}"
        );
    }

    #[tokio::test]
    async fn readiness_is_503_fail_when_a_critical_check_fails() {
        let mut system = full();
        system.add_check(Arc::new(FnHealthCheck::new("database", || async {
            ComponentHealth::unhealthy("DB error: refused")
        })));
        let health = Arc::new(system);
        let (status, _, body) = get(&health, "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "fail");
        assert_eq!(body["checks"]["database"][0]["output"], "DB error: refused");
    }

    #[tokio::test]
    async fn readiness_stays_200_warn_when_only_a_non_critical_check_fails() {
        let mut system = full();
        system.add_check_with(
            Arc::new(FnHealthCheck::new("cache", || async {
                ComponentHealth::unhealthy("redis down")
            })),
            CheckOptions::non_critical(),
        );
        let health = Arc::new(system);
        let (status, _, body) = get(&health, "/health/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "warn");
        assert_eq!(body["checks"]["cache"][0]["status"], "fail");
    }

    #[tokio::test]
    async fn draining_turns_readiness_503_but_liveness_stays_200() {
        let ran = Arc::new(AtomicBool::new(false));
        let mut system = full();
        let flag = Arc::clone(&ran);
        system.add_check(Arc::new(FnHealthCheck::new("database", move || {
            flag.store(true, Ordering::SeqCst);
            async { ComponentHealth::healthy("ok") }
        })));
        let health = Arc::new(system);
        health.readiness_gate().start_draining();

        let (status, _, body) = get(&health, "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "fail");
        assert!(
            !ran.load(Ordering::SeqCst),
            "draining readiness runs no check"
        );

        let (status, _, body) = get(&health, "/health/live").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "pass");
    }

    #[tokio::test]
    async fn liveness_never_runs_a_check() {
        let mut system = full();
        system.add_check(Arc::new(FnHealthCheck::new("database", || async {
            panic!("liveness must not ask dependencies")
        })));
        let health = Arc::new(system);
        let (status, _, body) = get(&health, "/health/live").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "pass"}));
    }

    #[tokio::test]
    async fn startup_is_503_until_startup_checks_pass_then_200() {
        let ready = Arc::new(AtomicBool::new(false));
        let mut system = full();
        let flag = Arc::clone(&ready);
        system.add_check(Arc::new(FnHealthCheck::new("model", move || {
            let ok = flag.load(Ordering::SeqCst);
            async move {
                if ok {
                    ComponentHealth::healthy("loaded")
                } else {
                    ComponentHealth::unhealthy("loading")
                }
            }
        })));
        let health = Arc::new(system);
        let (status, _, body) = get(&health, "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["model"][0]["output"], "loading");

        ready.store(true, Ordering::SeqCst);
        let (status, _, body) = get(&health, "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "pass");

        ready.store(false, Ordering::SeqCst);
        let (status, _, _) = get(&health, "/health").await;
        assert_eq!(status, StatusCode::OK, "startup does not regress");
    }

    #[tokio::test]
    async fn summary_detail_hides_component_names() {
        let mut system = SystemHealthCheck::new();
        system.add_check(Arc::new(FnHealthCheck::new("secret-db", || async {
            ComponentHealth::unhealthy("password rejected for user admin")
        })));
        let health = Arc::new(system);
        let (status, _, body) = get(&health, "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.get("checks").is_none());
        assert!(!body.to_string().contains("secret-db"));
        assert!(!body.to_string().contains("password"));
    }
}
