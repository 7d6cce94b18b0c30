//! Core types for production AI agents.
//!
//! This crate is the bottom of the `composable-rust-agent-patterns` workspace;
//! every other crate builds on it and it depends on none of them.
//!
//! * [`AgentError`]: one error type for the whole call path, with
//!   [`status_code`](AgentError::status_code) for HTTP and
//!   [`is_temporary`](AgentError::is_temporary) for retries and fallbacks.
//! * [`Message`] and [`AgentEnvironment`]: the conversation and the seam
//!   through which an agent reaches its LLM, its tools and its audit log.
//! * [`Reducer`], [`Effects`] and [`Store`]: the agent as a state machine.
//!   The reducer decides; effects describe I/O; the store runs both.
//!   [`TestStore`] checks a reducer and its effects step by step.
//! * [`AgentMetrics`]: tool-call and error figures, also emitted through
//!   the `metrics` facade.
//!
//! # Example
//!
//! An agent that asks its environment's LLM and records the answer:
//!
//! ```
//! use std::sync::Arc;
//! use agent_patterns_core::*;
//!
//! struct Fixed;
//! impl AgentEnvironment for Fixed {
//!     async fn call_llm(&self, messages: &[Message]) -> Result<String> {
//!         Ok(format!("you said {} thing(s)", messages.len()))
//!     }
//!     async fn execute_tool(&self, tool: &str, _input: &str) -> Result<String> {
//!         Err(AgentError::tool(tool, "no tools here"))
//!     }
//!     async fn log_audit(&self, _: &str, _: &str, _: &str, _: bool) -> Result<()> {
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Debug, Clone, PartialEq, Default)]
//! struct State { messages: Vec<Message> }
//!
//! #[derive(Debug, Clone, PartialEq)]
//! enum Action { Send(String), Reply(Result<String>) }
//!
//! struct Agent;
//! impl Reducer for Agent {
//!     type State = State;
//!     type Action = Action;
//!     type Environment = Arc<Fixed>;
//!
//!     fn reduce(&self, state: &mut State, action: Action, env: &Arc<Fixed>) -> Effects<Action> {
//!         match action {
//!             Action::Send(text) => {
//!                 state.messages.push(Message::user(text));
//!                 let (env, history) = (Arc::clone(env), state.messages.clone());
//!                 Effects::run(async move { Action::Reply(env.call_llm(&history).await) })
//!             }
//!             Action::Reply(Ok(text)) => {
//!                 state.messages.push(Message::assistant(text));
//!                 Effects::none()
//!             }
//!             Action::Reply(Err(_)) => Effects::none(),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut store = TestStore::new(State::default(), Agent, Arc::new(Fixed));
//! store.send(Action::Send("hi".into()), |s| s.messages.push(Message::user("hi"))).await;
//! store
//!     .receive(Action::Reply(Ok("you said 1 thing(s)".into())), |s| {
//!         s.messages.push(Message::assistant("you said 1 thing(s)"))
//!     })
//!     .await;
//! store.finish().await;
//! # }
//! ```

mod effect;
mod environment;
mod error;
mod message;
mod metrics;
mod reducer;
mod runtime;
mod store;
mod test_store;

pub use effect::{Effect, EffectId, Effects};
pub use environment::AgentEnvironment;
pub use error::{AgentError, Result};
pub use message::{Message, Role};
pub use metrics::{
    AgentMetrics, ERRORS_TOTAL, MetricsSnapshot, OTHER_TOOL, TOOL_CALLS_TOTAL,
    TOOL_LATENCY_SECONDS, ToolStats, describe_metrics,
};
pub use reducer::Reducer;
pub use store::{Store, StoreConfig, StoreError, StoreTask};
pub use test_store::TestStore;
