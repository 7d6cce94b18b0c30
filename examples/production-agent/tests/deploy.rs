//! The deployment files under `deploy/` query metrics the workspace emits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every string literal of lowercase letters, digits and `_` in the
/// workspace's Rust sources: metric names are declared as such literals.
fn literals() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root().join("crates"), root().join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, piece) in text.split('"').enumerate() {
                    if i % 2 == 1
                        && !piece.is_empty()
                        && piece
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        out.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    out
}

/// Metric names in a PromQL expression: identifiers followed by a label
/// selector `{`, a range `[`, or a comparison.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let ident = &expr[start..i];
            let next = expr[i..].trim_start().bytes().next();
            let selector = matches!(bytes.get(i), Some(b'{' | b'['));
            let compared = matches!(next, Some(b'>' | b'<' | b'=' | b'!'))
                && !expr[..start].trim_end().ends_with(['{', ',']);
            let in_braces = expr[..start].matches('{').count() > expr[..start].matches('}').count();
            if (selector || compared) && !in_braces && ident.contains('_') {
                names.push(ident.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

fn assert_emitted(names: &[String], known: &BTreeSet<String>, file: &str) {
    assert!(!names.is_empty(), "{file}: no metric found");
    for name in names {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| known.contains(*b)))
            .unwrap_or(name);
        assert!(
            known.contains(base),
            "{file} queries {name}, which no crate emits"
        );
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            r#"sum by (tool) (rate(agent_tool_calls_total{job=~"$job", status="error"}[5m]))"#
        ),
        ["agent_tool_calls_total"]
    );
    assert_eq!(
        metric_names("bulkhead_queue_size > 0"),
        ["bulkhead_queue_size"]
    );
    assert_eq!(
        metric_names("rate(a_total[5m]) / rate(b_total[5m])"),
        ["a_total", "b_total"]
    );
}

#[test]
fn the_grafana_dashboard_queries_emitted_metrics() {
    let known = literals();
    assert!(known.contains("agent_requests_total"));
    let file = "deploy/grafana/agent-overview.json";
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(file)).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut names = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "duplicate panel id"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            names.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    assert_emitted(&names, &known, file);
}

#[test]
fn the_alert_rules_query_emitted_metrics() {
    let known = literals();
    let file = "deploy/prometheus/alerts.yaml";
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    // The expressions: an `expr:` line's value, or the block under `expr: |`.
    let mut names = Vec::new();
    let mut block = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(expr) = trimmed.strip_prefix("expr:") {
            block = matches!(expr.trim(), "|" | "|-" | "|+" | ">" | ">-" | ">+");
            names.extend(metric_names(expr));
        } else if block && !trimmed.contains(": ") {
            names.extend(metric_names(trimmed));
        } else {
            block = false;
        }
    }
    assert_emitted(&names, &known, file);
}
