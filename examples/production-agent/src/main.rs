//! `production-agent`: run the agent server.

#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use composable_rust_agent_patterns::shutdown::{ShutdownConfig, ShutdownCoordinator};
use composable_rust_agent_patterns::tracing_support::{
    LogFormat, PrometheusConfig, PrometheusExporter, TracingBuilder,
};
use production_agent::App;
use production_agent::config::Config;

/// mimalloc: the agent path allocates per request (histories, audit events);
/// it scales better across worker threads than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An AI-agent server with auth, rate limits, circuit breakers, tools, health
/// probes and Prometheus metrics. Runs with no setup on an offline model.
///
/// Configuration: embedded defaults, then the TOML file given with --config,
/// then these environment variables:
///   AGENT_HTTP_ADDR       API address            (default 0.0.0.0:8080)
///   AGENT_METRICS_ADDR    /metrics address       (default 0.0.0.0:9090)
///   AGENT_API_KEYS        user_id:role:key,...   (role user or admin; with none,
///                         an admin key is generated and printed once)
///   ANTHROPIC_API_KEY     use the Anthropic Messages API
///   OPENAI_BASE_URL, OPENAI_API_KEY   use an OpenAI-compatible endpoint
///   AGENT_LLM_PROVIDER    offline | anthropic | openai
///   AGENT_LLM_MODEL, AGENT_LLM_BASE_URL, AGENT_LLM_FALLBACK
///   DATABASE_URL          keep conversations and the audit log in PostgreSQL
///                         (schema and migrations applied at start)
///   AGENT_JSON_LOGS       1 for JSON log lines
///   RUST_LOG              log filter (default info)
///   OTEL_EXPORTER_OTLP_ENDPOINT   export traces over OTLP (other OTEL_* honoured)
#[derive(Debug, Parser)]
#[command(name = "production-agent", version, verbatim_doc_comment)]
struct Args {
    /// TOML configuration file (every field optional; unknown fields are errors).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML (a template for --config) and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("production-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        match toml::to_string_pretty(&config.redacted()) {
            Ok(text) => {
                println!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("production-agent: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server stopped");
            eprintln!("production-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let tracing = {
        let builder = TracingBuilder::new("production-agent")
            .service_version(env!("CARGO_PKG_VERSION"))
            .log_format(if config.json_logs {
                LogFormat::Json
            } else {
                LogFormat::Text
            });
        let builder = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            builder
        } else {
            builder.without_otlp()
        };
        builder.install()?
    };
    let prometheus = PrometheusExporter::install(&PrometheusConfig {
        listen_addr: config.metrics_addr,
        ..PrometheusConfig::default()
    })?;
    composable_rust_agent_patterns::describe_metrics();
    production_agent::describe_metrics();
    composable_rust_agent_patterns::resilience::resilience_metrics::describe_metrics();

    let (http_addr, metrics_addr) = (config.http_addr, config.metrics_addr);
    let shutdown = Arc::new(ShutdownCoordinator::with_config(ShutdownConfig {
        timeout: config.shutdown_timeout,
        drain_delay: config.drain_delay,
        ..ShutdownConfig::default()
    })?);
    let app = App::build(config).await?;
    if let Some(key) = &app.generated_admin_key {
        eprintln!(
            "\n  No API key configured; generated an admin key for this run:\n\n      {key}\n\n  \
             Use it as `Authorization: Bearer {key}`. Set AGENT_API_KEYS to choose your own.\n"
        );
    }

    let api_listener = tokio::net::TcpListener::bind(http_addr).await?;
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr).await?;
    let running = app.serve(
        api_listener,
        Some((metrics_listener, prometheus.router())),
        &shutdown,
    );
    tracing::info!(%http_addr, %metrics_addr, "production-agent listening");
    // Telemetry is flushed last, so spans of the shutdown itself are exported.
    shutdown.register(Arc::new(tracing));
    let report = shutdown.shutdown_on_signal().await?;
    tracing::info!(report = ?report, "shutdown complete");
    running.finished().await?;
    Ok(())
}
