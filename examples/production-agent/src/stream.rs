//! The streamed message call: the same agent turn, reported as server-sent
//! events while it runs.
//!
//! `POST /v1/conversations/{id}/messages` with `"stream": true` answers
//! `text/event-stream` with, in order:
//!
//! * `tool_call` — `{"tool", "input"}` each time the model asks for a tool;
//! * `tool_result` — `{"tool", "output"}` or `{"tool", "error"}` when it ran;
//! * `message` — `{"content"}` when the model answers in text;
//! * then exactly one of `done` — `{"conversation_id", "reply",
//!   "message_count"}` once the turn is saved — or `error` — `{"error":
//!   {"code", "message", "trace_id"?}}`, the body a plain call would have had.
//!
//! The turn runs in its own task holding the conversation, so a client that
//! disconnects mid-stream loses nothing: the turn completes and is saved.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use composable_rust_agent_patterns::tracing_support::current_trace_ids;
use composable_rust_agent_patterns::{AgentError, Effects, Reducer};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::agent::{AgentAction, AgentReducer, AgentState, ServerEnvironment};
use crate::http::{AppState, run_agent_with, settle_turn};
use crate::llm::Reply;
use crate::storage::Locked;

/// The agent's reducer, reporting the actions it reduces as stream events.
struct Streaming {
    inner: Arc<AgentReducer>,
    events: mpsc::Sender<Event>,
}

impl Reducer for Streaming {
    type State = AgentState;
    type Action = AgentAction;
    type Environment = Arc<ServerEnvironment>;

    fn reduce(
        &self,
        state: &mut AgentState,
        action: AgentAction,
        env: &Arc<ServerEnvironment>,
    ) -> Effects<AgentAction> {
        if let Some(event) = event_for(&action) {
            // The channel holds a whole turn's events (see `capacity`); a
            // full or closed channel means the client is gone, and the turn
            // goes on without it.
            let _ = self.events.try_send(event);
        }
        self.inner.reduce(state, action, env)
    }
}

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        json!({"error": {"code": "internal", "message": e.to_string()}}).to_string()
    });
    Event::default().event(name).data(data)
}

/// The event an action is worth to the client, if any.
fn event_for(action: &AgentAction) -> Option<Event> {
    match action {
        AgentAction::ProcessResponse { response } => Some(match Reply::parse(response) {
            Reply::ToolCall { name, input } => {
                event("tool_call", &json!({ "tool": name, "input": input }))
            }
            Reply::Text(text) => event("message", &json!({ "content": text })),
        }),
        AgentAction::ToolResult { tool, output } => Some(match output {
            Ok(out) => event("tool_result", &json!({ "tool": tool, "output": out })),
            Err(e) => event(
                "tool_result",
                &json!({ "tool": tool, "error": e.to_string() }),
            ),
        }),
        _ => None,
    }
}

fn error_event(error: &AgentError, trace_id: Option<&str>) -> Event {
    let mut body = json!({ "code": error.code(), "message": error.to_string() });
    if let Some(id) = trace_id {
        body["trace_id"] = Value::String(id.to_owned());
    }
    event("error", &json!({ "error": body }))
}

/// Events one turn can produce: a call and a result per tool step, the text
/// reply and the final event, with room to spare.
fn capacity(reducer: &AgentReducer) -> usize {
    let steps = usize::try_from(reducer.config().max_steps).unwrap_or(usize::MAX);
    steps.saturating_mul(2).saturating_add(8)
}

/// Start the turn for `content` on the locked conversation and stream it.
pub fn turn(
    app: Arc<AppState>,
    locked: Locked,
    id: String,
    content: String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (sender, receiver) = mpsc::channel(capacity(&app.reducer));
    let trace_id = current_trace_ids().map(|(trace, _)| trace);
    let task = async move {
        let last = match run(&app, locked, &id, content, sender.clone()).await {
            Ok(last) => last,
            Err(error) => error_event(&error, trace_id.as_deref()),
        };
        let _ = sender.send(last).await;
    };
    tokio::spawn(task.in_current_span());
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Run the turn, save it, and return the final `done` event.
async fn run(
    app: &AppState,
    mut locked: Locked,
    id: &str,
    content: String,
    events: mpsc::Sender<Event>,
) -> Result<Event, AgentError> {
    let reducer = Streaming {
        inner: Arc::clone(&app.reducer),
        events,
    };
    // Screened before the stream started; should the rules have changed in
    // between, `settle_turn` still does not keep a blocked message.
    run_agent_with(
        reducer,
        app,
        &mut locked,
        AgentAction::SendMessage { content },
    )
    .await?;
    let body = settle_turn(locked, id).await?;
    Ok(event("done", &body))
}
