//! `cargo xtask bench`: run criterion benches and report ratios to anchors;
//! `cargo xtask bench http`: the HTTP load benchmark of the agent server.
//!
//! Every benchmark group measures one of our types next to its anchor (governor,
//! tokio's `Semaphore`, a naive baseline). Criterion writes each function's
//! estimates to `target/criterion/<group>/<function>/new/estimates.json`; this
//! reads the mean of each and prints `ours / anchor` for every group whose
//! anchor function is named `anchor*` or `*baseline*` (the security bench's
//! `eight_substring_baseline`) and whose measured functions are the rest.
//! `cargo bench --workspace` also runs the two benches with their own harness
//! (the audit store's, which needs PostgreSQL, and the HTTP one); they print
//! their own tables and take no filter.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::workspace_root;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    if args.first().map(String::as_str) == Some("http") {
        // The HTTP load benchmark prints its own table.
        let status = Command::new(crate::cargo())
            .current_dir(&root)
            .args(["bench", "-p", "production-agent", "--bench", "http"])
            .status()
            .map_err(|e| format!("could not run cargo bench: {e}"))?;
        return if status.success() {
            Ok(())
        } else {
            Err("the http benchmark failed".into())
        };
    }
    let mut cmd = Command::new(crate::cargo());
    cmd.current_dir(&root).args(["bench", "--workspace"]);
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    cmd.arg("--");
    for f in &filters {
        cmd.arg(f.as_str());
    }
    let status = cmd
        .status()
        .map_err(|e| format!("could not run cargo bench: {e}"))?;
    if !status.success() {
        return Err("cargo bench failed".into());
    }
    // Criterion writes under the target directory cargo used.
    report(&crate::target_dir(&root).join("criterion"))
}

/// Print, per group, each function's mean and its ratio to the group's anchor.
fn report(dir: &Path) -> Result<(), String> {
    let Ok(groups) = fs::read_dir(dir) else {
        return Err(format!("no criterion results under {}", dir.display()));
    };
    let mut groups: Vec<_> = groups.filter_map(Result::ok).map(|e| e.path()).collect();
    groups.sort();
    println!("\n{:<48} {:>14} {:>10}", "benchmark", "mean", "vs anchor");
    for group in groups
        .iter()
        .filter(|p| p.is_dir() && !p.ends_with("report"))
    {
        let mut functions: Vec<(String, f64)> = Vec::new();
        collect(group, group, &mut functions);
        functions.sort_by(|a, b| a.0.cmp(&b.0));
        let anchor = functions
            .iter()
            .find(|(n, _)| is_anchor(n))
            .map(|(_, m)| *m);
        for (name, mean) in &functions {
            let ratio = match anchor {
                Some(a) if a > 0.0 && !is_anchor(name) => format!("{:.2}x", mean / a),
                _ => String::new(),
            };
            let label = format!(
                "{}/{}",
                group.file_name().and_then(|s| s.to_str()).unwrap_or("?"),
                name
            );
            println!("{label:<48} {:>14} {ratio:>10}", format_ns(*mean));
        }
    }
    Ok(())
}

/// Whether a benchmark function is its group's anchor.
fn is_anchor(name: &str) -> bool {
    name.starts_with("anchor") || name.contains("baseline")
}

fn collect(group: &Path, dir: &Path, out: &mut Vec<(String, f64)>) {
    let estimates = dir.join("new").join("estimates.json");
    if let Some(mean) = fs::read_to_string(&estimates)
        .ok()
        .and_then(|s| mean_of(&s))
    {
        let name = dir
            .strip_prefix(group)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, mean));
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("report") && !path.ends_with("base") {
                collect(group, &path, out);
            }
        }
    }
}

/// The `mean.point_estimate` of a criterion `estimates.json`, without a JSON
/// dependency: the file's first `"point_estimate":` belongs to `mean`.
fn mean_of(json: &str) -> Option<f64> {
    let mean = &json[json.find("\"mean\"")?..];
    let value = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.2} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::{is_anchor, mean_of};

    #[test]
    fn anchors_are_named_anchor_or_baseline() {
        assert!(is_anchor("anchor_governor"));
        assert!(is_anchor("eight_substring_baseline"));
        assert!(!is_anchor("detect"));
        assert!(!is_anchor("rules_only"));
    }

    #[test]
    fn reads_the_mean_point_estimate() {
        let json = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":2.5,"standard_error":0.1},"median":{"point_estimate":9.0}}"#;
        assert_eq!(mean_of(json), Some(2.5));
        assert_eq!(mean_of("{}"), None);
    }
}
