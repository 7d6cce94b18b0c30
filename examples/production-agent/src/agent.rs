//! The agent: the guide's `AgentReducer` over `AgentState`/`AgentAction`,
//! run by the core `Store`, and the environment its effects use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use composable_rust_agent_patterns::audit::{AuditEvent, AuditEventType, AuditLogger};
use composable_rust_agent_patterns::resilience::{
    Bulkhead, BulkheadConfig, CircuitBreaker, CircuitBreakerConfig, Pipeline, RateLimiter,
    RateLimiterConfig, RetryBudget, RetryPolicy, with_timeout,
};
use composable_rust_agent_patterns::security::{
    IncidentType, SecurityIncident, SecurityMonitor, ThreatLevel,
};
use composable_rust_agent_patterns::tracing_support::ToolSpan;
use composable_rust_agent_patterns::{
    AgentEnvironment, AgentError, AgentMetrics, Effects, Message, Reducer, Role,
};

use crate::config::{AgentConfig, LlmConfig};
use crate::llm::{Provider, Reply};
use crate::tools;

/// Where a conversation stands.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum Status {
    /// Waiting for the user.
    #[default]
    Idle,
    /// The agent loop is running.
    Thinking,
    /// A message was refused by the security screen.
    Blocked(String),
    /// The last turn failed.
    Failed(String),
    /// Ended by the user.
    Ended,
}

/// One conversation's state. The default is an idle state with no owner and
/// no messages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentState {
    /// The conversation's id.
    pub conversation_id: Option<String>,
    /// The messages, the system prompt first. Shared copy-on-write: an LLM
    /// effect takes the history without copying it, and a push copies only
    /// when someone still holds the old history.
    pub messages: Arc<Vec<Message>>,
    /// Who owns it.
    pub user_id: Option<String>,
    /// LLM ↔ tool round trips in the current turn.
    pub steps: u32,
    /// Where it stands.
    pub status: Status,
    /// The error of the last failed turn.
    pub last_error: Option<AgentError>,
}

impl AgentState {
    /// A new conversation for `user_id`.
    pub fn new(conversation_id: String, user_id: String, system_prompt: &str) -> Self {
        Self {
            conversation_id: Some(conversation_id),
            messages: Arc::new(vec![Message::system(system_prompt)]),
            user_id: Some(user_id),
            steps: 0,
            status: Status::Idle,
            last_error: None,
        }
    }

    /// The same conversation without its messages.
    pub fn without_messages(&self) -> Self {
        Self {
            conversation_id: self.conversation_id.clone(),
            messages: Arc::default(),
            user_id: self.user_id.clone(),
            steps: self.steps,
            status: self.status.clone(),
            last_error: self.last_error.clone(),
        }
    }

    /// The latest assistant text, if any.
    pub fn last_reply(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant && Reply::is_text(&m.content))
            .map(|m| m.content.as_str())
    }
}

/// What can happen to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentAction {
    /// Begin a conversation.
    StartConversation {
        /// Its owner.
        user_id: String,
    },
    /// The user sent a message.
    SendMessage {
        /// The text.
        content: String,
    },
    /// The LLM answered.
    ProcessResponse {
        /// Its reply (text or a tool request).
        response: String,
    },
    /// A tool finished.
    ToolResult {
        /// The tool.
        tool: String,
        /// Its output or error.
        output: Result<String, AgentError>,
    },
    /// The LLM call failed.
    LlmFailed {
        /// Why.
        error: AgentError,
    },
    /// The user ended the conversation.
    EndConversation,
}

impl AgentAction {
    /// The variant's name, for logs (no user content).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::StartConversation { .. } => "start_conversation",
            Self::SendMessage { .. } => "send_message",
            Self::ProcessResponse { .. } => "process_response",
            Self::ToolResult { .. } => "tool_result",
            Self::LlmFailed { .. } => "llm_failed",
            Self::EndConversation => "end_conversation",
        }
    }
}

/// Decides whether a message may reach the model; `Some(reason)` blocks it.
pub type Screen = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The agent's decisions. Pure: all I/O is in the effects it returns.
pub struct AgentReducer {
    config: AgentConfig,
    screen: Screen,
}

impl AgentReducer {
    /// A reducer with the agent settings and a security screen.
    pub fn new(config: AgentConfig, screen: Screen) -> Self {
        Self { config, screen }
    }

    /// The security screen's verdict on `content`: `Some(reason)` when the
    /// reducer would block it.
    pub fn screen(&self, content: &str) -> Option<String> {
        (self.screen)(content)
    }

    /// The agent settings.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Keep at most `max_messages`, never dropping the system prompt.
    fn prune(&self, state: &mut AgentState) {
        let max = self.config.max_messages;
        if state.messages.len() > max {
            let keep_system = usize::from(
                state
                    .messages
                    .first()
                    .is_some_and(|m| m.role == Role::System),
            );
            let excess = state.messages.len() - max;
            Arc::make_mut(&mut state.messages).drain(keep_system..keep_system + excess);
        }
    }

    fn call_llm(state: &AgentState, env: &Arc<ServerEnvironment>) -> Effects<AgentAction> {
        let env = Arc::clone(env);
        let history = Arc::clone(&state.messages);
        Effects::run(async move {
            match env.call_llm(&history).await {
                Ok(response) => AgentAction::ProcessResponse { response },
                Err(error) => AgentAction::LlmFailed { error },
            }
        })
    }

    fn audit(
        state: &AgentState,
        env: &Arc<ServerEnvironment>,
        event_type: &'static str,
        action: &'static str,
        success: bool,
    ) -> Effects<AgentAction> {
        let env = Arc::clone(env);
        let actor = state.user_id.clone().unwrap_or_default();
        Effects::fire_and_forget(async move {
            if let Err(e) = env.log_audit(event_type, &actor, action, success).await {
                tracing::error!(error = %e, "audit write failed");
            }
        })
    }
}

impl Reducer for AgentReducer {
    type State = AgentState;
    type Action = AgentAction;
    type Environment = Arc<ServerEnvironment>;

    fn reduce(
        &self,
        state: &mut AgentState,
        action: AgentAction,
        env: &Arc<ServerEnvironment>,
    ) -> Effects<AgentAction> {
        // `RUST_LOG=production_agent::reducer=trace` follows every step
        // (the action's kind only: messages are not logged).
        tracing::trace!(
            target: "production_agent::reducer",
            action = action.kind(),
            messages = state.messages.len(),
            steps = state.steps,
            "reduce"
        );
        match action {
            AgentAction::StartConversation { user_id } => {
                state.user_id = Some(user_id);
                state.status = Status::Idle;
                Self::audit(state, env, "data_access", "start_conversation", true)
            }
            AgentAction::SendMessage { content } => {
                // 1. Security first: a blocked message never reaches the model.
                if let Some(reason) = (self.screen)(&content) {
                    state.status = Status::Blocked(reason.clone());
                    let env = Arc::clone(env);
                    let actor = state.user_id.clone().unwrap_or_default();
                    // The incident is written to the audit log by the monitor.
                    return Effects::fire_and_forget(async move {
                        env.report_prompt_injection(&actor, &reason).await;
                    });
                }
                // 2. State.
                Arc::make_mut(&mut state.messages).push(Message::user(content));
                self.prune(state);
                state.steps = 0;
                state.status = Status::Thinking;
                state.last_error = None;
                // 3. Effects: audit and the LLM call.
                Effects::merge([
                    Self::audit(state, env, "llm_interaction", "send_message", true),
                    Self::call_llm(state, env),
                ])
            }
            AgentAction::ProcessResponse { response } => match Reply::tool_request(&response) {
                Some(Reply::ToolCall { name, input }) => {
                    Arc::make_mut(&mut state.messages).push(Message::assistant(response));
                    state.steps += 1;
                    if state.steps > self.config.max_steps {
                        let error = AgentError::Internal(format!(
                            "the agent needed more than {} tool steps",
                            self.config.max_steps
                        ));
                        state.status = Status::Failed(error.to_string());
                        state.last_error = Some(error);
                        self.prune(state);
                        return Effects::none();
                    }
                    self.prune(state);
                    let env = Arc::clone(env);
                    Effects::run(async move {
                        let output = env.execute_tool(&name, &input).await;
                        AgentAction::ToolResult { tool: name, output }
                    })
                }
                _ => {
                    Arc::make_mut(&mut state.messages).push(Message::assistant(response));
                    self.prune(state);
                    state.status = Status::Idle;
                    Effects::none()
                }
            },
            AgentAction::ToolResult { tool, output } => {
                let content = match output {
                    Ok(out) => out,
                    Err(e) => format!("error from {tool}: {e}"),
                };
                Arc::make_mut(&mut state.messages).push(Message::tool(content));
                self.prune(state);
                Self::call_llm(state, env)
            }
            AgentAction::LlmFailed { error } => {
                state.status = Status::Failed(error.to_string());
                state.last_error = Some(error);
                Self::audit(state, env, "llm_interaction", "llm_call_failed", false)
            }
            AgentAction::EndConversation => {
                state.status = Status::Ended;
                Self::audit(state, env, "data_access", "end_conversation", true)
            }
        }
    }
}

/// The resilient LLM path of one provider.
pub struct LlmRoute {
    /// The provider.
    pub provider: Provider,
    /// Rate limiter → circuit breaker → timeout, with budgeted retries.
    pub pipeline: Pipeline,
    /// The breaker inside the pipeline (for the admin endpoints).
    pub breaker: Arc<CircuitBreaker>,
    /// The limiter inside the pipeline (for the debug endpoint).
    pub limiter: Arc<RateLimiter>,
}

impl LlmRoute {
    /// The route for provider `name`.
    pub fn new(
        name: &str,
        config: &LlmConfig,
        budget: Arc<RetryBudget>,
    ) -> Result<Self, AgentError> {
        let provider = Provider::new(name, config)?;
        let label = format!("llm_{name}");
        let limiter = Arc::new(RateLimiter::try_new(
            label.clone(),
            RateLimiterConfig {
                capacity: config.burst,
                refill_rate: config.rate_per_second,
            },
        )?);
        let breaker = Arc::new(CircuitBreaker::try_new(
            label.clone(),
            CircuitBreakerConfig {
                failure_threshold: config.failure_threshold,
                success_threshold: 1,
                timeout: config.open_timeout,
            },
        )?);
        let pipeline = Pipeline::builder(label)
            .rate_limiter(Arc::clone(&limiter))
            .circuit_breaker(Arc::clone(&breaker))
            .timeout(config.timeout)
            .retry(RetryPolicy {
                max_attempts: config.max_attempts,
                initial_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(5),
                ..RetryPolicy::default()
            })
            .retry_budget(budget)
            .build()?;
        Ok(Self {
            provider,
            pipeline,
            breaker,
            limiter,
        })
    }

    async fn complete(&self, messages: &[Message]) -> Result<String, AgentError> {
        self.pipeline
            .execute(|| self.provider.complete(messages))
            .await
    }
}

/// The production environment: every effect goes through it.
pub struct ServerEnvironment {
    /// The primary LLM.
    pub primary: LlmRoute,
    /// Used only when the primary fails with a temporary error.
    pub fallback: Option<LlmRoute>,
    /// Tool calls run inside this bulkhead.
    pub tools: Arc<Bulkhead>,
    /// Time limit of one tool call.
    pub tool_timeout: Duration,
    /// Tool-call figures.
    pub metrics: Arc<AgentMetrics>,
    /// Audit destination.
    pub audit: Arc<dyn AuditLogger>,
    /// Where security incidents go.
    pub security: Arc<SecurityMonitor>,
}

impl ServerEnvironment {
    /// Build from the configuration.
    pub fn new(
        llm: &LlmConfig,
        agent: &AgentConfig,
        audit: Arc<dyn AuditLogger>,
        security: Arc<SecurityMonitor>,
    ) -> Result<Self, AgentError> {
        let budget = Arc::new(RetryBudget::new(0.2, 5, Duration::from_secs(10))?);
        let primary = LlmRoute::new(&llm.provider, llm, Arc::clone(&budget))?;
        let fallback = match llm.fallback.as_str() {
            "" => None,
            name => Some(LlmRoute::new(name, llm, budget)?),
        };
        let tools = Arc::new(Bulkhead::try_new(
            "tools",
            BulkheadConfig {
                max_concurrent: agent.tool_concurrency,
                acquire_timeout: Duration::from_secs(5),
            },
        )?);
        Ok(Self {
            primary,
            fallback,
            tools,
            tool_timeout: agent.tool_timeout,
            metrics: Arc::new(AgentMetrics::new()),
            audit,
            security,
        })
    }

    /// Every breaker of the environment.
    pub fn breakers(&self) -> Vec<Arc<CircuitBreaker>> {
        std::iter::once(&self.primary)
            .chain(self.fallback.as_ref())
            .map(|r| Arc::clone(&r.breaker))
            .collect()
    }

    /// Every limiter of the environment.
    pub fn limiters(&self) -> Vec<Arc<RateLimiter>> {
        std::iter::once(&self.primary)
            .chain(self.fallback.as_ref())
            .map(|r| Arc::clone(&r.limiter))
            .collect()
    }
}

impl AgentEnvironment for ServerEnvironment {
    async fn call_llm(&self, messages: &[Message]) -> Result<String, AgentError> {
        match self.primary.complete(messages).await {
            Ok(reply) => Ok(reply),
            Err(e) if e.is_temporary() && self.fallback.is_some() => {
                tracing::warn!(error = %e, "primary LLM failed, trying fallback");
                match &self.fallback {
                    Some(fallback) => fallback.complete(messages).await,
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn execute_tool(&self, tool_name: &str, input: &str) -> Result<String, AgentError> {
        let mut span = ToolSpan::start(tool_name, None);
        let started = Instant::now();
        let (tool, input) = (tool_name.to_owned(), input.to_owned());
        let result = match self
            .tools
            .execute(with_timeout(self.tool_timeout, async move {
                tools::run(&tool, &input)
            }))
            .instrument(span.span().clone())
            .await
        {
            Ok(Ok(output)) => output,
            Ok(Err(timeout)) => Err(timeout.into()),
            Err(full) => Err(full.into()),
        };
        self.metrics
            .record_tool_call(tool_name, result.is_ok(), started.elapsed());
        if let Err(e) = &result {
            span.record_error(e.code());
            self.metrics.record_error(e.to_string());
        }
        span.finish();
        result
    }

    async fn log_audit(
        &self,
        event_type: &str,
        actor: &str,
        action: &str,
        success: bool,
    ) -> Result<(), AgentError> {
        let event_type: AuditEventType = event_type.parse().map_err(|_| {
            AgentError::InvalidInput(format!("unknown audit event type {event_type:?}"))
        })?;
        self.audit
            .log(AuditEvent::new(event_type, actor, action, success))
            .await?;
        Ok(())
    }
}

impl ServerEnvironment {
    /// Record a blocked prompt-injection attempt as a security incident (the
    /// monitor also writes it to the audit log).
    pub async fn report_prompt_injection(&self, actor: &str, reason: &str) {
        let incident = SecurityIncident::new(
            IncidentType::PromptInjection,
            ThreatLevel::High,
            actor,
            reason,
        );
        if let Err(e) = self.security.report_incident(incident).await {
            tracing::error!(error = %e, "security incident not recorded");
        }
    }
}
