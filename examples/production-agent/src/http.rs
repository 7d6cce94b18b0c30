//! The HTTP API: routes, authentication, JSON errors.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use composable_rust_agent_patterns::resilience::KeyedRateLimiter;
use composable_rust_agent_patterns::{AgentError, Reducer, Store};
use serde::Deserialize;
use serde_json::json;

use crate::agent::{AgentAction, AgentReducer, AgentState, ServerEnvironment, Status};
use crate::auth::{ApiKeys, Role, User};
use crate::config::Config;
use crate::conversations::Conversation;
use crate::storage::{Locked, Storage};
use axum::extract::ConnectInfo;
use composable_rust_agent_patterns::audit::{
    AuditCursor, AuditEvent, AuditEventType, AuditLogger, AuditQuery, MAX_PAGE_SIZE,
};
use composable_rust_agent_patterns::security::{
    BruteForceDetector, RateLimitAbuseDetector, SecurityMonitor,
};
use std::net::SocketAddr;

/// Everything the handlers share.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// API keys.
    pub keys: ApiKeys,
    /// Per-user request limit.
    pub user_limiter: KeyedRateLimiter<String>,
    /// Conversations.
    pub storage: Storage,
    /// The agent's environment.
    pub env: Arc<ServerEnvironment>,
    /// The agent's decisions.
    pub reducer: Arc<AgentReducer>,
    /// The audit trail.
    pub audit: Arc<dyn AuditLogger>,
    /// Security incidents.
    pub security: Arc<SecurityMonitor>,
    /// Failed authentications per source; blocks sources that keep failing.
    pub brute_force: BruteForceDetector,
    /// Sources that keep hitting the rate limit.
    pub abuse: RateLimitAbuseDetector,
}

impl AppState {
    /// Write an audit event; a failing audit store fails the request (503)
    /// rather than letting an unaudited action through.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), ApiError> {
        self.audit
            .log(event)
            .await
            .map_err(|e| ApiError::from(AgentError::from(e)))
    }
}

/// The client's address: the connection's peer, when known.
fn source_ip(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "unknown".to_owned(),
            |ConnectInfo(addr)| addr.ip().to_string(),
        )
}

/// An error answered as JSON: `{"error": {"code", "message"}}`, with the status
/// from `AgentError::status_code()` and `Retry-After` on 429.
#[derive(Debug)]
pub struct ApiError {
    error: AgentError,
    retry_after: Option<Duration>,
}

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.error.status_code();
        let body = Json(json!({
            "error": {
                "code": self.error.code(),
                "message": self.error.to_string(),
            }
        }));
        let mut response = (status, body).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let secs = self
                .retry_after
                .map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// The authenticated caller, after the per-user rate limit.
pub struct Caller(pub User);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let source = source_ip(parts);
        // A source that kept failing is blocked for a while, key or not.
        if let Some(remaining) = state.brute_force.block_remaining(&source) {
            return Err(ApiError {
                error: AgentError::RateLimited,
                retry_after: Some(remaining),
            });
        }
        let Some(presented) = bearer(&parts.headers) else {
            return Err(AgentError::Unauthorized(
                "send an API key as `Authorization: Bearer <key>`".into(),
            )
            .into());
        };
        let Some(user) = state.keys.authenticate(presented) else {
            if let Err(e) = state.brute_force.record_failure(&source, "api_key").await {
                tracing::error!(error = %e, "brute-force detector failed");
            }
            state
                .audit(
                    AuditEvent::new(
                        AuditEventType::Authentication,
                        "anonymous",
                        "api_key",
                        false,
                    )
                    .with_source_ip(&source)
                    .with_metadata("reason", "unknown key"),
                )
                .await?;
            return Err(AgentError::Unauthorized("unknown API key".into()).into());
        };
        state.brute_force.record_success(&source, &user.id);
        if let Err(wait) = state.user_limiter.check_with_retry_after(&user.id, 1) {
            if let Err(e) = state.abuse.record_rejection(&user.id).await {
                tracing::error!(error = %e, "abuse detector failed");
            }
            return Err(ApiError {
                error: AgentError::RateLimited,
                retry_after: wait,
            });
        }
        state
            .audit(
                AuditEvent::new(AuditEventType::Authentication, &user.id, "api_key", true)
                    .with_source_ip(&source),
            )
            .await?;
        Ok(Caller(user))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// An admin caller.
pub struct Admin(pub User);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Caller(user) = Caller::from_request_parts(parts, state).await?;
        let allowed = user.role == Role::Admin;
        state
            .audit(
                AuditEvent::new(
                    AuditEventType::Authorization,
                    &user.id,
                    "admin_access",
                    allowed,
                )
                .with_resource(parts.uri.path())
                .with_source_ip(source_ip(parts)),
            )
            .await?;
        if !allowed {
            return Err(AgentError::Forbidden("admin role required".into()).into());
        }
        Ok(Admin(user))
    }
}

/// JSON body whose rejections are our JSON errors (400/413/415).
pub struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => StatusCode::BAD_REQUEST,
                };
                let body =
                    json!({"error": {"code": "invalid_input", "message": rejection.body_text()}});
                Err((status, Json(body)).into_response())
            }
        }
    }
}

/// The API routes (health and metrics are mounted by the caller).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/conversations",
            post(create_conversation).get(list_conversations),
        )
        .route(
            "/v1/conversations/{id}",
            get(get_conversation).delete(end_conversation),
        )
        .route("/v1/conversations/{id}/messages", post(send_message))
        .route("/debug/state", get(debug_state))
        .route("/debug/rate_limiter", get(debug_rate_limiter))
        .route("/debug/circuit_breakers", get(debug_circuit_breakers))
        .route("/admin/circuit-breakers/{name}/reset", post(reset_breaker))
        .route("/admin/security/dashboard", get(security_dashboard))
        .route("/admin/audit", get(audit_query))
}

async fn create_conversation(
    State(app): State<Arc<AppState>>,
    Caller(user): Caller,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    let state = AgentState::new(id.clone(), user.id.clone(), &app.config.agent.system_prompt);
    let (state, result) = run_store(
        Arc::clone(&app.reducer),
        &app,
        state,
        AgentAction::StartConversation {
            user_id: user.id.clone(),
        },
    )
    .await;
    result?;
    let created_at = chrono::Utc::now();
    app.storage
        .create(Conversation {
            id: id.clone(),
            owner: user.id,
            created_at,
            state,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "created_at": created_at})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_conversations(
    State(app): State<Arc<AppState>>,
    Caller(user): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AgentError::InvalidInput("limit must be between 1 and 100".into()).into());
    }
    let cursor = match q.cursor {
        Some(c) => Some(
            c.parse::<u64>()
                .map_err(|_| AgentError::InvalidInput("invalid cursor".into()))?,
        ),
        None => None,
    };
    Ok(Json(app.storage.list(&user.id, limit, cursor).await?).into_response())
}

fn owner_filter(user: &User) -> Option<&str> {
    (user.role != Role::Admin).then_some(user.id.as_str())
}

async fn get_conversation(
    State(app): State<Arc<AppState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = app
        .storage
        .read(&id, owner_filter(&user))
        .await?
        .ok_or_else(|| AgentError::NotFound(format!("conversation {id}")))?;
    Ok(Json(json!({
        "id": c.id,
        "created_at": c.created_at,
        "status": c.state.status,
        "messages": c.state.messages,
    }))
    .into_response())
}

async fn end_conversation(
    State(app): State<Arc<AppState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut locked = app
        .storage
        .lock(&id, owner_filter(&user))
        .await?
        .ok_or_else(|| AgentError::NotFound(format!("conversation {id}")))?;
    detached(async move {
        run_agent(&app, &mut locked, AgentAction::EndConversation).await?;
        let state = locked.take_state();
        locked.save(state).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    content: String,
    /// Answer with server-sent events as the turn progresses.
    #[serde(default)]
    stream: bool,
}

async fn send_message(
    State(app): State<Arc<AppState>>,
    Caller(user): Caller,
    Path(id): Path<String>,
    Body(body): Body<SendMessage>,
) -> Result<Response, ApiError> {
    let content = body.content.trim();
    if content.is_empty() {
        return Err(AgentError::InvalidInput("content must not be empty".into()).into());
    }
    let max = app.config.limits.max_content_chars;
    if content.chars().count() > max {
        return Err(
            AgentError::InvalidInput(format!("content is longer than {max} characters")).into(),
        );
    }
    let mut locked = app
        .storage
        .lock(&id, owner_filter(&user))
        .await?
        .ok_or_else(|| AgentError::NotFound(format!("conversation {id}")))?;
    if locked.conversation().state.status == Status::Ended {
        return Err(AgentError::InvalidInput("the conversation has ended".into()).into());
    }
    // A message the screen blocks takes the plain path below (400, incident,
    // audit) even when a stream was asked for: there is nothing to stream.
    if body.stream && app.reducer.screen(content).is_none() {
        return Ok(crate::stream::turn(app, locked, id, content.to_owned()).into_response());
    }
    let content = content.to_owned();
    let body = detached(async move {
        run_agent(&app, &mut locked, AgentAction::SendMessage { content }).await?;
        settle_turn(locked, &id).await
    })
    .await?;
    Ok(Json(body).into_response())
}

/// Run a turn in its own task and wait for it. A client that disconnects, or
/// a request that times out, drops the handler but not the turn: the turn
/// completes and is saved, instead of being cut off while it holds the
/// conversation's state.
async fn detached<T: Send + 'static>(
    turn: impl Future<Output = Result<T, AgentError>> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::spawn(tracing::Instrument::in_current_span(turn))
        .await
        .map_err(|e| AgentError::Internal(format!("the turn stopped: {e}")))?
}

/// Run the agent's reducer for one action (and everything it causes) on the
/// locked conversation's state.
async fn run_agent(
    app: &AppState,
    locked: &mut Locked,
    action: AgentAction,
) -> Result<(), AgentError> {
    run_agent_with(Arc::clone(&app.reducer), app, locked, action).await
}

/// Run `reducer` for one action (and everything it causes) on the locked
/// conversation's state. The state goes back into `locked` in every case,
/// including errors.
pub(crate) async fn run_agent_with<R>(
    reducer: R,
    app: &AppState,
    locked: &mut Locked,
    action: AgentAction,
) -> Result<(), AgentError>
where
    R: Reducer<State = AgentState, Action = AgentAction, Environment = Arc<ServerEnvironment>>,
{
    let (state, result) = run_store(reducer, app, locked.take_state(), action).await;
    locked.put_state(state);
    result
}

/// Run `reducer` for one action (and everything it causes) on `state` in a
/// store; the state it reached comes back in every case, with the error.
async fn run_store<R>(
    reducer: R,
    app: &AppState,
    state: AgentState,
    action: AgentAction,
) -> (AgentState, Result<(), AgentError>)
where
    R: Reducer<State = AgentState, Action = AgentAction, Environment = Arc<ServerEnvironment>>,
{
    // Kept only until the store exists, should it refuse to start; then the
    // store holds the only reference to the history and appends without
    // copying it.
    let fallback = state.clone();
    let store = match Store::with_config(
        state,
        reducer,
        Arc::clone(&app.env),
        composable_rust_agent_patterns::StoreConfig::default(),
    ) {
        Ok(store) => store,
        Err(e) => return (fallback, Err(e.into())),
    };
    drop(fallback);
    let result = match store.send(action).await {
        Ok(task) => {
            task.finished().await;
            Ok(())
        }
        // The store stopped (its reducer panicked): keep what it reached.
        Err(e) => Err(e.into()),
    };
    (store.state(Clone::clone), result)
}

/// The answer to a message: the reply after the turn.
#[derive(Debug, serde::Serialize)]
pub(crate) struct TurnReply {
    conversation_id: String,
    reply: Option<String>,
    message_count: usize,
}

/// End a message turn: keep its state (a blocked message is not kept; every
/// other outcome is) and give the reply body, or the turn's error.
pub(crate) async fn settle_turn(mut locked: Locked, id: &str) -> Result<TurnReply, AgentError> {
    let state = locked.take_state();
    match &state.status {
        Status::Blocked(reason) => {
            let error = AgentError::SecurityViolation(reason.clone());
            locked.put_unkept(state);
            Err(error)
        }
        Status::Failed(_) => {
            let error = state
                .last_error
                .clone()
                .unwrap_or_else(|| AgentError::Internal("the agent failed".into()));
            locked.save(state).await?;
            Err(error)
        }
        _ => {
            let body = TurnReply {
                conversation_id: id.to_owned(),
                reply: state.last_reply().map(str::to_owned),
                message_count: state.messages.len(),
            };
            locked.save(state).await?;
            Ok(body)
        }
    }
}

async fn debug_state(
    State(app): State<Arc<AppState>>,
    Admin(_): Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (conversations, messages) = app.storage.counts().await?;
    Ok(Json(json!({
        "conversation_count": conversations,
        "message_count": messages,
        "storage": if app.storage.pool().is_some() { "postgres" } else { "memory" },
        "tool_metrics": app.env.metrics.snapshot(),
    })))
}

async fn debug_rate_limiter(
    State(app): State<Arc<AppState>>,
    Admin(_): Admin,
) -> Json<serde_json::Value> {
    let limiters: Vec<_> = app.env.limiters().iter().map(|l| l.snapshot()).collect();
    Json(json!({
        "limiters": limiters,
        "per_user": {
            "name": app.user_limiter.name(),
            "capacity": app.user_limiter.config().capacity,
            "refill_rate": app.user_limiter.config().refill_rate,
            "keys": app.user_limiter.len(),
            "max_keys": app.user_limiter.max_keys(),
        }
    }))
}

async fn debug_circuit_breakers(
    State(app): State<Arc<AppState>>,
    Admin(_): Admin,
) -> Json<serde_json::Value> {
    let breakers: Vec<_> = app.env.breakers().iter().map(|b| b.metrics()).collect();
    Json(json!({ "circuit_breakers": breakers }))
}

async fn reset_breaker(
    State(app): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let breaker = app
        .env
        .breakers()
        .into_iter()
        .find(|b| b.name() == name)
        .ok_or_else(|| AgentError::NotFound(format!("circuit breaker {name}")))?;
    breaker.force_reset().await;
    app.audit(
        AuditEvent::new(
            AuditEventType::Configuration,
            &admin.id,
            "reset_circuit_breaker",
            true,
        )
        .with_resource(format!("circuit_breaker:{name}")),
    )
    .await?;
    Ok(Json(json!({"name": name, "state": breaker.state()})).into_response())
}

async fn security_dashboard(
    State(app): State<Arc<AppState>>,
    Admin(_): Admin,
) -> Result<Response, ApiError> {
    let dashboard = app
        .security
        .get_dashboard()
        .await
        .map_err(AgentError::from)?;
    Ok(Json(dashboard).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    actor: Option<String>,
    event_type: Option<String>,
    success: Option<bool>,
    resource: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn audit_query(
    State(app): State<Arc<AppState>>,
    Admin(_): Admin,
    Query(p): Query<AuditParams>,
) -> Result<Response, ApiError> {
    let event_type = match p.event_type {
        Some(t) => Some(
            t.parse::<AuditEventType>()
                .map_err(|_| AgentError::InvalidInput(format!("unknown event_type {t:?}")))?,
        ),
        None => None,
    };
    let cursor = match p.cursor {
        Some(c) => Some(
            AuditCursor::decode(&c)
                .map_err(|_| AgentError::InvalidInput("invalid cursor".into()))?,
        ),
        None => None,
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(AgentError::InvalidInput(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        ))
        .into());
    }
    let page = app
        .audit
        .query(AuditQuery {
            actor: p.actor,
            event_type,
            success: p.success,
            resource: p.resource,
            limit,
            cursor,
            ..AuditQuery::default()
        })
        .await
        .map_err(AgentError::from)?;
    Ok(Json(page).into_response())
}
