//! The server binary's command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn help_lists_the_configuration_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_production-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for name in [
        "--config",
        "--print-config",
        "AGENT_HTTP_ADDR",
        "AGENT_METRICS_ADDR",
        "AGENT_API_KEYS",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "DATABASE_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(
            help.contains(name),
            "--help does not mention {name}:\n{help}"
        );
    }
}

#[test]
fn print_config_prints_toml_that_parses() {
    let out = Command::new(env!("CARGO_BIN_EXE_production-agent"))
        .arg("--print-config")
        .env("AGENT_API_KEYS", "alice:user:key-one-secret")
        .env("ANTHROPIC_API_KEY", "sk-ant-secret")
        .env(
            "DATABASE_URL",
            "postgres://agent:db-secret@127.0.0.1:5432/agent",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in ["key-one-secret", "sk-ant-secret", "db-secret"] {
        assert!(
            !text.contains(secret),
            "--print-config printed {secret}:\n{text}"
        );
    }
    let value: toml::Value = toml::from_str(&text).unwrap();
    assert!(value.as_table().is_some_and(|t| !t.is_empty()), "{text}");
}
