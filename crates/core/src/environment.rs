//! The environment an agent's reducer talks to the outside world through.

use std::future::Future;

use crate::{AgentError, Message};

/// Dependency injection for an agent: every side effect (LLM, tools, audit) goes
/// through this trait, so production wires real clients wrapped in resilience
/// primitives while tests plug in deterministic fakes.
///
/// The methods return `Send` futures, so effects built from them can run on a
/// multi-threaded tokio runtime. Implementations may use `async fn`:
///
/// ```
/// use agent_patterns_core::{AgentEnvironment, AgentError, Message};
///
/// struct EchoEnvironment;
///
/// impl AgentEnvironment for EchoEnvironment {
///     async fn call_llm(&self, messages: &[Message]) -> Result<String, AgentError> {
///         let last = messages.last().ok_or_else(|| AgentError::InvalidInput("no messages".into()))?;
///         Ok(format!("echo: {}", last.content))
///     }
///
///     async fn execute_tool(&self, tool_name: &str, input: &str) -> Result<String, AgentError> {
///         Err(AgentError::tool(tool_name, format!("unknown tool (input {input:?})")))
///     }
///
///     async fn log_audit(
///         &self,
///         _event_type: &str,
///         _actor: &str,
///         _action: &str,
///         _success: bool,
///     ) -> Result<(), AgentError> {
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let reply = EchoEnvironment.call_llm(&[Message::user("hi")]).await.unwrap();
/// assert_eq!(reply, "echo: hi");
/// # });
/// ```
pub trait AgentEnvironment: Send + Sync {
    /// Call the LLM with the conversation so far and return its reply.
    fn call_llm(
        &self,
        messages: &[Message],
    ) -> impl Future<Output = Result<String, AgentError>> + Send;

    /// Run the named tool with its input and return its output.
    fn execute_tool(
        &self,
        tool_name: &str,
        input: &str,
    ) -> impl Future<Output = Result<String, AgentError>> + Send;

    /// Record an audit event.
    fn log_audit(
        &self,
        event_type: &str,
        actor: &str,
        action: &str,
        success: bool,
    ) -> impl Future<Output = Result<(), AgentError>> + Send;
}
