//! Log filter directives that name the facade.

/// The facade crate's name as users write it in `RUST_LOG`.
const FACADE: &str = "composable_rust_agent_patterns";

/// The facade's modules whose name is not `agent_patterns_` + a crate name:
/// (facade module, target path).
const FACADE_MODULES: [(&str, &str); 2] = [
    ("agent_core", "agent_patterns_core"),
    (
        "context_propagation",
        "agent_patterns_tracing_support::context_propagation",
    ),
];

/// Modules the facade renamed inside a crate's module: (`::` + facade name,
/// the crate's own name).
const RENAMED_MODULES: [(&str, &str); 4] = [
    ("::resilience_metrics", "metrics"),
    ("::resilience_retry", "retry"),
    ("::prometheus_exporter", "prometheus"),
    ("::genai_spans", "genai"),
];

/// `filter` (`EnvFilter` directives) with the facade's name standing for the
/// crates it re-exports. Events carry the target of the crate that emits them
/// (`agent_patterns_resilience::circuit_breaker`), never the facade's, so
/// `composable_rust_agent_patterns=debug` becomes `agent_patterns=debug` (a
/// prefix of every one of them) and a facade module path
/// (`composable_rust_agent_patterns::resilience=trace`) the crate behind it
/// (`agent_patterns_resilience=trace`). Other directives are kept as written.
/// The audit trail's tracing sink logs each event on its own target, `audit`,
/// which none of these names reaches.
pub(crate) fn expand_facade_targets(filter: &str) -> String {
    filter
        .split(',')
        .map(|directive| {
            let lead = directive.len() - directive.trim_start().len();
            let (space, d) = directive.split_at(lead);
            let Some(rest) = d.strip_prefix(FACADE) else {
                return directive.to_owned();
            };
            if rest.is_empty() || rest.starts_with(['=', '[']) {
                return format!("{space}agent_patterns{rest}");
            }
            let Some(path) = rest.strip_prefix("::") else {
                return directive.to_owned();
            };
            let end = path.find([':', '=', '[']).unwrap_or(path.len());
            let (module, rest) = (&path[..end], &path[end..]);
            if module.is_empty() {
                return directive.to_owned();
            }
            let crate_path = FACADE_MODULES
                .iter()
                .find(|(facade, _)| *facade == module)
                .map_or_else(
                    || format!("agent_patterns_{module}"),
                    |(_, path)| (*path).to_owned(),
                );
            let rest = RENAMED_MODULES
                .iter()
                .find_map(|(facade, name)| {
                    rest.strip_prefix(facade).map(|r| format!("::{name}{r}"))
                })
                .unwrap_or_else(|| rest.to_owned());
            format!("{space}{crate_path}{rest}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::expand_facade_targets;

    #[test]
    fn the_facade_name_stands_for_its_crates() {
        assert_eq!(
            expand_facade_targets("production_agent=debug,composable_rust_agent_patterns=debug"),
            "production_agent=debug,agent_patterns=debug"
        );
        assert_eq!(
            expand_facade_targets("composable_rust_agent_patterns::resilience=trace"),
            "agent_patterns_resilience=trace"
        );
        assert_eq!(
            expand_facade_targets("composable_rust_agent_patterns::context_propagation=info"),
            "agent_patterns_tracing_support::context_propagation=info"
        );
        assert_eq!(
            expand_facade_targets("composable_rust_agent_patterns::agent_core=debug"),
            "agent_patterns_core=debug"
        );
        assert_eq!(
            expand_facade_targets(
                "composable_rust_agent_patterns::resilience::resilience_metrics=trace"
            ),
            "agent_patterns_resilience::metrics=trace"
        );
        assert_eq!(
            expand_facade_targets(
                "composable_rust_agent_patterns::tracing_support::prometheus_exporter=debug"
            ),
            "agent_patterns_tracing_support::prometheus=debug"
        );
        assert_eq!(
            expand_facade_targets("composable_rust_agent_patterns::tracing_support::genai_spans"),
            "agent_patterns_tracing_support::genai"
        );
        assert_eq!(
            expand_facade_targets("composable_rust_agent_patterns[span]=info"),
            "agent_patterns[span]=info"
        );
    }

    #[test]
    fn other_directives_are_kept() {
        for filter in [
            "info",
            "production_agent::reducer=trace",
            "composable_rust_agent_patterns_extra=debug",
            "my_crate=warn, tower_http=debug",
        ] {
            assert_eq!(expand_facade_targets(filter), filter);
        }
    }

    #[test]
    fn the_expanded_filter_enables_the_crates_events() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let filter = tracing_subscriber::EnvFilter::builder()
            .parse(expand_facade_targets(
                "composable_rust_agent_patterns=debug",
            ))
            .unwrap();
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            assert!(
                tracing::enabled!(target: "agent_patterns_resilience::breaker", tracing::Level::DEBUG)
            );
            assert!(
                !tracing::enabled!(target: "agent_patterns_resilience::breaker", tracing::Level::TRACE)
            );
            assert!(!tracing::enabled!(target: "other_crate", tracing::Level::DEBUG));
        });
    }
}
