//! `production-agent`: run the agent server.

#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use production_agent::App;
use production_agent::config::Config;

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
///   AGENT_JSON_LOGS       1 for JSON log lines
///   RUST_LOG              log filter (default info)
#[derive(Debug, Parser)]
#[command(name = "production-agent", version, verbatim_doc_comment)]
struct Args {
    /// TOML configuration file (every field optional; unknown fields are errors).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
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
        match toml::to_string_pretty(&Config {
            api_keys: vec!["<redacted>".into(); config.api_keys.len()],
            ..config
        }) {
            Ok(text) => {
                eprintln!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("production-agent: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    init_logging(config.json_logs);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server stopped");
            eprintln!("production-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    composable_rust_agent_patterns::describe_metrics();
    composable_rust_agent_patterns::resilience::metrics::describe_metrics();
    let http_addr = config.http_addr;
    let metrics_addr = config.metrics_addr;
    let app = App::build(config)?;
    if let Some(key) = &app.generated_admin_key {
        eprintln!(
            "\n  No API key configured; generated an admin key for this run:\n\n      {key}\n\n  Use it as `Authorization: Bearer {key}`. Set AGENT_API_KEYS to choose your own.\n"
        );
    }
    let api = tokio::net::TcpListener::bind(http_addr).await?;
    let metrics = tokio::net::TcpListener::bind(metrics_addr).await?;
    tracing::info!(%http_addr, %metrics_addr, "production-agent listening");
    let metrics_router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = prometheus.clone();
            async move { handle.render() }
        }),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut api_stop = stop_rx.clone();
    let mut metrics_stop = stop_rx;
    let api_server = axum::serve(api, app.router()).with_graceful_shutdown(async move {
        let _ = api_stop.changed().await;
    });
    let metrics_server = axum::serve(metrics, metrics_router).with_graceful_shutdown(async move {
        let _ = metrics_stop.changed().await;
    });
    let signal = async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        let _ = stop_tx.send(true);
    };
    let (api_result, metrics_result, ()) = tokio::join!(api_server, metrics_server, signal);
    api_result?;
    metrics_result?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
