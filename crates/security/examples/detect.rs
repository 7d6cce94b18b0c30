//! Classify prompts from stdin.
//!
//! Reads JSON lines `{"text": "..."}` from stdin and prints exactly one line per
//! input line: `1` (injection) or `0` (benign), nothing else on stdout.
//!
//! A line that is not a JSON object with a `text` field (bad JSON, a missing
//! field, a blank line) is scored as raw text, a bare JSON string is scored as
//! that string, and a non-string `text` value as its JSON; so every input line
//! gets exactly one output line and the command never stops early. Input that is
//! not valid UTF-8 is read lossily. Diagnostics go to stderr.
//!
//! With `--explain`, each output line is instead the JSON of the full
//! `Detection` (score, verdict, matched rules with byte spans); with
//! `--normalized`, the JSON string of the input's normalised word view (what
//! the rules and the lexical model read; `tools/train_lexical.py` trains on it).
//!
//! ```text
//! cargo run --release -p agent-patterns-security --example detect < prompts.jsonl
//! ```

use std::io::{self, BufRead, BufWriter, Write};

use agent_patterns_security::PromptInjectionDetector;
use agent_patterns_security::injection::normalize;

fn text_of(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => match map.get("text") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => line.to_owned(),
        },
        Ok(serde_json::Value::String(s)) => s,
        _ => line.to_owned(),
    }
}

fn main() -> io::Result<()> {
    let detector = match PromptInjectionDetector::new() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("detect: cannot build detector: {e}");
            std::process::exit(2);
        }
    };
    let explain = std::env::args().skip(1).any(|a| a == "--explain");
    let normalized = std::env::args().skip(1).any(|a| a == "--normalized");
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        let text = text_of(line);
        if normalized {
            let json = serde_json::to_string(&normalize(&text).text)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            writeln!(out, "{json}")?;
            continue;
        }
        let detection = detector.detect(&text);
        if explain {
            let json = serde_json::to_string(&detection)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            writeln!(out, "{json}")?;
        } else {
            writeln!(out, "{}", u8::from(detection.is_injection()))?;
        }
    }
    out.flush()
}
