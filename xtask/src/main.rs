//! Project automation, in Rust so it runs wherever cargo does.
//!
//! * `cargo xtask test`  — everything CI runs: format check, clippy with
//!   `-D warnings`, the whole test suite (nextest when installed), the loom
//!   models, doctests and a warning-free `cargo doc`. Checks first that PostgreSQL is reachable.
//! * `cargo xtask bench [NAME…]` — runs the criterion benchmarks and prints
//!   each measured type's ratio to its anchor.
//! * `cargo xtask image [--tag TAG]` — builds the agent server's container image.
//! * `cargo xtask manifests [--image IMG] [--replicas N] [--namespace NS]` —
//!   prints its Kubernetes manifests, for `kubectl apply -f -`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::env;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

mod bench;
mod deploy;

/// The database the tests use when `DATABASE_URL` is not set.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("image") => deploy::image(&args[1..]),
        Some("manifests") => deploy::manifests(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test           format check, clippy -D warnings, all tests (nextest if installed),
                 loom models, doctests and cargo doc; needs PostgreSQL (DATABASE_URL, default
                 postgres://postgres@127.0.0.1:5432/postgres)
  bench [NAME…]  run criterion benchmarks (all, or those matching NAME) and print
                 ratios of each measured type to its anchor
  bench http     the agent server's HTTP throughput against bare axum
  image [--tag TAG]
                 docker build the agent server's image (default production-agent:<version>)
  manifests [--image IMG] [--replicas N] [--namespace NS]
                 print the Kubernetes manifests (deploy/kubernetes) for that image,
                 e.g. `cargo xtask manifests --image my/agent:1 | kubectl apply -f -`
";

fn test(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "`cargo xtask test` takes no arguments (got `{arg}`)"
        ));
    }
    let database_url = env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    check_postgres(&database_url)?;

    let root = workspace_root();
    step(&root, "format", &["fmt", "--all", "--", "--check"], &[])?;
    step(
        &root,
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    let env = [("DATABASE_URL", database_url.as_str())];
    if has_nextest() {
        step(
            &root,
            "tests (nextest)",
            &[
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
            ],
            &env,
        )?;
    } else {
        println!("xtask: cargo-nextest not installed; using cargo test");
        step(
            &root,
            "tests",
            &[
                "test",
                "--workspace",
                "--all-features",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ],
            &env,
        )?;
    }
    // The loom models build the resilience crate with loom's atomics: a
    // separate target directory keeps the main build's artefacts valid.
    let loom_target = target_dir(&root).join("loom");
    let loom_target = loom_target.to_string_lossy().into_owned();
    step(
        &root,
        "loom models",
        &[
            "test",
            "-p",
            "agent-patterns-resilience",
            "--lib",
            "--release",
            "loom_models",
        ],
        &[
            ("RUSTFLAGS", "--cfg agent_patterns_loom"),
            ("CARGO_TARGET_DIR", loom_target.as_str()),
        ],
    )?;
    step(
        &root,
        "doctests",
        &["test", "--workspace", "--all-features", "--doc"],
        &env,
    )?;
    step(
        &root,
        "docs",
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    println!("xtask: all checks passed");
    Ok(())
}

/// Run `cargo <args>` in the workspace root, failing with the step's name.
fn step(root: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    println!("xtask: ── {name}: cargo {}", args.join(" "));
    let status = Command::new(cargo())
        .args(args)
        .current_dir(root)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed (cargo {})", args.join(" ")))
    }
}

fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn has_nextest() -> bool {
    Command::new(cargo())
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The target directory cargo uses when run in `root`: `CARGO_TARGET_DIR`
/// (relative to `root` when relative), else `root/target`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

pub(crate) fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Fail with instructions when nothing listens where `DATABASE_URL` points.
fn check_postgres(url: &str) -> Result<(), String> {
    let (host, port) = parse_host_port(url)
        .ok_or_else(|| format!("DATABASE_URL is not a postgres:// URL with a host: {url}"))?;
    let reachable = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok());
    if reachable {
        println!("xtask: PostgreSQL reachable at {host}:{port}");
        return Ok(());
    }
    Err(format!(
        "PostgreSQL is not reachable at {host}:{port} (DATABASE_URL={url}).\n\
         The audit store and server tests need a real PostgreSQL server. Start one, e.g.:\n\
         \x20 sudo pg_ctlcluster $(ls /etc/postgresql) main start          # Debian/Ubuntu package\n\
         \x20 docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16\n\
         or point DATABASE_URL at a server where the user may create databases."
    ))
}

/// `postgres://user:pw@host:port/db?x` → (host, port); IPv6 hosts in brackets.
fn parse_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5432,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::parse_host_port;

    #[test]
    fn parses_the_forms_database_url_takes() {
        assert_eq!(
            parse_host_port("postgres://postgres@127.0.0.1:5432/postgres"),
            Some(("127.0.0.1".into(), 5432))
        );
        assert_eq!(
            parse_host_port("postgresql://u:p%40ss@db.internal/app?sslmode=require"),
            Some(("db.internal".into(), 5432))
        );
        assert_eq!(
            parse_host_port("postgres://[::1]:6543/x"),
            Some(("::1".into(), 6543))
        );
        assert_eq!(parse_host_port("mysql://localhost/x"), None);
        assert_eq!(parse_host_port("postgres:///x"), None);
        assert_eq!(parse_host_port("postgres://h:notaport/x"), None);
    }
}
