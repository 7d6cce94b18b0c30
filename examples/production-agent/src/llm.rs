//! LLM providers behind one type: an offline deterministic model (the
//! default), the Anthropic Messages API, and OpenAI-compatible chat
//! completions (vLLM, Ollama, llama.cpp server, …).
//!
//! A reply is plain text, or a tool request encoded as
//! `{"tool_call":{"name":…,"input":…}}` (see [`Reply`]), so the agent loop is
//! the same whichever provider answers.

use std::time::Duration;

use composable_rust_agent_patterns::context_propagation::trace_headers;
use composable_rust_agent_patterns::tracing_support::ChatSpan;
use composable_rust_agent_patterns::{AgentError, Message, Role};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::config::LlmConfig;
use crate::tools::calculate;

/// What the model answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Text for the user.
    Text(String),
    /// A request to run a tool.
    ToolCall {
        /// The tool.
        name: String,
        /// Its input.
        input: String,
    },
}

impl Reply {
    /// Read a provider's reply string.
    pub fn parse(raw: &str) -> Self {
        Self::tool_request(raw).unwrap_or_else(|| Reply::Text(raw.to_owned()))
    }

    /// Whether `raw` is text for the user rather than a tool request.
    pub fn is_text(raw: &str) -> bool {
        Self::tool_request(raw).is_none()
    }

    /// The tool request in `raw`, or `None` when `raw` is text.
    pub fn tool_request(raw: &str) -> Option<Self> {
        // Text is the common case: only an object can be a tool request.
        if !raw.trim_start().starts_with('{') {
            return None;
        }
        let ToolCallWire { tool_call } = serde_json::from_str(raw).ok()?;
        Some(Reply::ToolCall {
            name: tool_call.name.into_owned(),
            input: tool_call.input.into_owned(),
        })
    }

    /// The reply string for a tool request.
    pub fn tool_call(name: &str, input: &str) -> String {
        serde_json::to_string(&ToolCallWire {
            tool_call: ToolCallBody {
                name: name.into(),
                input: input.into(),
            },
        })
        // Two strings always serialise; the fallback only keeps this total.
        .unwrap_or_else(|_| json!({ "tool_call": { "name": name, "input": input } }).to_string())
    }
}

/// `{"tool_call":{"name":…,"input":…}}`; other fields are ignored.
#[derive(serde::Serialize, serde::Deserialize)]
struct ToolCallWire<'a> {
    #[serde(borrow)]
    tool_call: ToolCallBody<'a>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ToolCallBody<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    input: std::borrow::Cow<'a, str>,
}

/// Which protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The built-in deterministic model.
    Offline,
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI-compatible chat completions.
    OpenAi,
}

/// One LLM endpoint.
#[derive(Debug, Clone)]
pub struct Provider {
    kind: Kind,
    model: String,
    base_url: String,
    api_key: Option<String>,
    max_tokens: u32,
    http: reqwest::Client,
}

impl Provider {
    /// The provider named `name` with the settings of `config`.
    pub fn new(name: &str, config: &LlmConfig) -> Result<Self, AgentError> {
        let kind = match name {
            "offline" => Kind::Offline,
            "anthropic" => Kind::Anthropic,
            "openai" => Kind::OpenAi,
            other => {
                return Err(AgentError::Config(format!(
                    "llm.provider: unknown provider {other:?}"
                )));
            }
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout + Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AgentError::Config(format!("llm http client: {e}")))?;
        Ok(Self {
            kind,
            model: if kind == Kind::Offline {
                "offline-deterministic".into()
            } else {
                config.model.clone()
            },
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.clone(),
            max_tokens: config.max_tokens,
            http,
        })
    }

    /// The protocol.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The `gen_ai.provider.name` of this provider.
    pub fn provider_name(&self) -> &'static str {
        match self.kind {
            Kind::Offline => "offline",
            Kind::Anthropic => "anthropic",
            Kind::OpenAi => "openai",
        }
    }

    /// Ask the model for the next reply to `messages`, inside a GenAI
    /// `chat {model}` span that records duration, token usage and errors;
    /// the span's trace context is sent to the provider.
    pub async fn complete(&self, messages: &[Message]) -> Result<String, AgentError> {
        let mut chat = ChatSpan::start(self.provider_name(), &self.model);
        chat.record_request_parameters(Some(u64::from(self.max_tokens)), None);
        let result = match self.kind {
            Kind::Offline => offline(messages).map(|text| Completion {
                input_tokens: messages.iter().map(|m| estimate_tokens(&m.content)).sum(),
                output_tokens: estimate_tokens(&text),
                model: None,
                text,
            }),
            Kind::Anthropic => {
                self.anthropic(messages)
                    .instrument(chat.span().clone())
                    .await
            }
            Kind::OpenAi => self.openai(messages).instrument(chat.span().clone()).await,
        };
        match result {
            Ok(completion) => {
                if let Some(model) = &completion.model {
                    chat.record_response_model(model);
                }
                chat.record_usage(completion.input_tokens, completion.output_tokens);
                chat.finish();
                Ok(completion.text)
            }
            Err(e) => {
                chat.record_error(e.code());
                chat.finish();
                Err(e)
            }
        }
    }

    async fn anthropic(&self, messages: &[Message]) -> Result<Completion, AgentError> {
        let system: Vec<&str> = messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let turns: Vec<Value> = messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| match m.role {
                Role::Assistant => json!({"role": "assistant", "content": m.content}),
                Role::Tool => {
                    json!({"role": "user", "content": format!("Tool result: {}", m.content)})
                }
                _ => json!({"role": "user", "content": m.content}),
            })
            .collect();
        let body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": system.join("\n"),
            "messages": turns,
            "tools": [
                {"name": "calculator", "description": "Evaluate an arithmetic expression.",
                 "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}},
                {"name": "clock", "description": "The current UTC time.",
                 "input_schema": {"type": "object", "properties": {}}}
            ]
        });
        let mut request = self
            .http
            .post(format!("{}/v1/messages", self.base_url))
            .headers(trace_headers())
            .header("anthropic-version", "2023-06-01")
            .json(&body);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let response = send(request).await?;
        let completion = |text: String| Completion {
            input_tokens: usage(&response, "input_tokens"),
            output_tokens: usage(&response, "output_tokens"),
            model: response
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned),
            text,
        };
        let blocks = response
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_reply("no content"))?;
        for block in blocks {
            if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return Ok(completion(Reply::tool_call(
                    name,
                    &tool_input(block.get("input")),
                )));
            }
        }
        let text: Vec<&str> = blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        if text.is_empty() {
            return Err(bad_reply("no text block"));
        }
        Ok(completion(text.join("")))
    }

    async fn openai(&self, messages: &[Message]) -> Result<Completion, AgentError> {
        let turns: Vec<Value> = messages
            .iter()
            .map(|m| match m.role {
                Role::Tool => {
                    json!({"role": "user", "content": format!("Tool result: {}", m.content)})
                }
                role => json!({"role": role.as_str(), "content": m.content}),
            })
            .collect();
        let body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": turns,
            "tools": [
                {"type": "function", "function": {"name": "calculator", "description": "Evaluate an arithmetic expression.",
                 "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}},
                {"type": "function", "function": {"name": "clock", "description": "The current UTC time.",
                 "parameters": {"type": "object", "properties": {}}}}
            ]
        });
        let mut request = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = send(request).await?;
        let completion = |text: String| Completion {
            input_tokens: usage(&response, "prompt_tokens"),
            output_tokens: usage(&response, "completion_tokens"),
            model: response
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned),
            text,
        };
        let message = response
            .pointer("/choices/0/message")
            .ok_or_else(|| bad_reply("no choices[0].message"))?;
        if let Some(call) = message.pointer("/tool_calls/0/function") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let arguments = call
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let input = serde_json::from_str::<Value>(arguments).ok();
            return Ok(completion(Reply::tool_call(
                name,
                &tool_input(input.as_ref()),
            )));
        }
        message
            .get("content")
            .and_then(Value::as_str)
            .map(|text| completion(text.to_owned()))
            .ok_or_else(|| bad_reply("no content"))
    }
}

/// A token count from the provider's `usage` object (0 when absent).
fn usage(response: &Value, key: &str) -> u64 {
    response
        .get("usage")
        .and_then(|u| u.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// A reply with its token usage.
struct Completion {
    text: String,
    input_tokens: u64,
    output_tokens: u64,
    model: Option<String>,
}

/// About four bytes per token (the usual rule of thumb for English), for the
/// offline model's usage figures.
fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

fn tool_input(input: Option<&Value>) -> String {
    match input {
        Some(Value::Object(map)) => map
            .get("expression")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn bad_reply(what: &str) -> AgentError {
    AgentError::Llm(format!("unexpected reply from the provider: {what}"))
}

/// Send a request; overload, server errors and network trouble are temporary
/// (`LlmUnavailable`), other refusals permanent (`Llm`).
async fn send(request: reqwest::RequestBuilder) -> Result<Value, AgentError> {
    let response = request
        .send()
        .await
        .map_err(|e| AgentError::LlmUnavailable(format!("provider unreachable: {e}")))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| AgentError::LlmUnavailable(format!("provider reply cut short: {e}")))?;
    if status.as_u16() == 429 || status.as_u16() == 529 || status.is_server_error() {
        return Err(AgentError::LlmUnavailable(format!(
            "provider answered {status}"
        )));
    }
    if !status.is_success() {
        let snippet: String = body.chars().take(200).collect();
        return Err(AgentError::Llm(format!(
            "provider refused the request ({status}): {snippet}"
        )));
    }
    serde_json::from_str(&body).map_err(|e| bad_reply(&format!("invalid JSON: {e}")))
}

/// The offline model: answers deterministically and exercises the tool loop —
/// arithmetic goes to the calculator, questions about the time to the clock.
pub fn offline(messages: &[Message]) -> Result<String, AgentError> {
    let last = messages
        .last()
        .ok_or_else(|| AgentError::InvalidInput("no messages".into()))?;
    match last.role {
        Role::Tool => {
            let asked = messages
                .iter()
                .rev()
                .find(|m| m.role == Role::Assistant)
                .and_then(|m| Reply::tool_request(&m.content));
            Ok(match asked {
                Some(Reply::ToolCall { name, input }) if name == "calculator" => {
                    format!("{input} = {}", last.content)
                }
                Some(Reply::ToolCall { name, .. }) if name == "clock" => {
                    format!("The current time is {}.", last.content)
                }
                _ => format!("The tool returned: {}", last.content),
            })
        }
        _ => {
            let text = last.content.as_str();
            if let Some(expression) = find_arithmetic(text) {
                return Ok(Reply::tool_call("calculator", &expression));
            }
            let lower = text.to_lowercase();
            if ["what time", "the time", "clock", "what day", "date today"]
                .iter()
                .any(|w| lower.contains(w))
            {
                return Ok(Reply::tool_call("clock", ""));
            }
            Ok(format!(
                "I am the offline model, so I can do arithmetic and tell the time. You said: {}",
                text.chars().take(200).collect::<String>()
            ))
        }
    }
}

/// The longest run of arithmetic characters that the calculator accepts and
/// that has an operator in it.
fn find_arithmetic(text: &str) -> Option<String> {
    let mut best: Option<String> = None;
    let mut current = String::new();
    let flush = |current: &mut String, best: &mut Option<String>| {
        let candidate = current
            .trim()
            .trim_end_matches(['.', '?'])
            .trim()
            .to_owned();
        let has_digit = candidate.chars().any(|c| c.is_ascii_digit());
        let has_operator = candidate.chars().skip(1).any(|c| "+-*/%^×÷".contains(c));
        if has_digit
            && has_operator
            && calculate(&candidate).is_ok()
            && best.as_ref().is_none_or(|b| b.len() < candidate.len())
        {
            *best = Some(candidate);
        }
        current.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || " .+-*/%^()×÷".contains(c) {
            current.push(c);
        } else {
            flush(&mut current, &mut best);
        }
    }
    flush(&mut current, &mut best);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_model_asks_the_calculator_then_answers() {
        let mut conversation = vec![
            Message::system("be helpful"),
            Message::user("What is 12 * (3 + 4)?"),
        ];
        let first = offline(&conversation).unwrap();
        assert_eq!(
            Reply::parse(&first),
            Reply::ToolCall {
                name: "calculator".into(),
                input: "12 * (3 + 4)".into()
            }
        );
        conversation.push(Message::assistant(first));
        conversation.push(Message::tool("84"));
        assert_eq!(offline(&conversation).unwrap(), "12 * (3 + 4) = 84");
    }

    #[test]
    fn offline_model_uses_the_clock_and_chats() {
        let r = offline(&[Message::user("What time is it?")]).unwrap();
        assert_eq!(
            Reply::parse(&r),
            Reply::ToolCall {
                name: "clock".into(),
                input: String::new()
            }
        );
        let r = offline(&[Message::user("Hello there")]).unwrap();
        assert!(matches!(Reply::parse(&r), Reply::Text(t) if t.contains("Hello there")));
        assert!(offline(&[]).is_err());
    }

    #[test]
    fn plain_text_is_not_a_tool_call() {
        assert_eq!(Reply::parse("{\"a\":1}"), Reply::Text("{\"a\":1}".into()));
        assert_eq!(Reply::parse("hi"), Reply::Text("hi".into()));
    }
}
