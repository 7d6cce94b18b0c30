//! `cargo xtask image` builds the agent server's container image;
//! `cargo xtask manifests` prints its Kubernetes manifests
//! (`deploy/kubernetes/deployment.yaml`) for a given image, replica count and
//! namespace.

use std::fs;
use std::process::Command;

use crate::workspace_root;

/// The manifests' template, relative to the workspace root.
const TEMPLATE: &str = "deploy/kubernetes/deployment.yaml";
/// The image the template names.
const TEMPLATE_IMAGE: &str = "production-agent:latest";
/// The template's replica count (the Deployment's and the autoscaler's minimum).
const TEMPLATE_REPLICAS: &str = "3";

/// The default image tag: the server's name and the workspace version.
fn default_tag() -> String {
    format!("production-agent:{}", env!("CARGO_PKG_VERSION"))
}

/// `--name value` options; anything else is an error naming it.
fn options<'a>(
    args: &'a [String],
    known: &[&'static str],
) -> Result<Vec<(&'static str, &'a str)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(name) = known.iter().find(|k| **k == arg.as_str()) else {
            return Err(format!(
                "unknown argument `{arg}` (expected one of {})",
                known.join(", ")
            ));
        };
        let value = it.next().ok_or_else(|| format!("`{name}` needs a value"))?;
        out.push((*name, value.as_str()));
    }
    Ok(out)
}

/// `cargo xtask image [--tag TAG]`: `docker build -t TAG .` at the root.
pub(crate) fn image(args: &[String]) -> Result<(), String> {
    let mut tag = default_tag();
    for (_, value) in options(args, &["--tag"])? {
        tag = value.to_owned();
    }
    check_image(&tag)?;
    let root = workspace_root();
    println!("xtask: docker build -t {tag} .");
    let status = Command::new("docker")
        .args(["build", "-t", &tag, "."])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("could not run docker ({e}); install Docker or build with `docker build -t {tag} .` elsewhere"))?;
    if status.success() {
        println!("xtask: built {tag}; `cargo xtask manifests --image {tag}` renders its manifests");
        Ok(())
    } else {
        Err("docker build failed".into())
    }
}

/// What `manifests` fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) image: String,
    pub(crate) replicas: u32,
    pub(crate) namespace: Option<String>,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut settings = Self {
            image: default_tag(),
            replicas: 3,
            namespace: None,
        };
        for (name, value) in options(args, &["--image", "--replicas", "--namespace"])? {
            match name {
                "--image" => settings.image = value.to_owned(),
                "--replicas" => {
                    settings.replicas = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| format!("--replicas must be 1 to 1000, got `{value}`"))?;
                }
                _ => settings.namespace = Some(value.to_owned()),
            }
        }
        check_image(&settings.image)?;
        if let Some(ns) = &settings.namespace {
            check_namespace(ns)?;
        }
        Ok(settings)
    }
}

/// An image reference without characters that would break the YAML line.
fn check_image(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{image}` is not an image reference (letters, digits and - _ . : / @ only)"
        ))
    }
}

/// A Kubernetes namespace: an RFC 1123 label.
fn check_namespace(ns: &str) -> Result<(), String> {
    let bytes = ns.as_bytes();
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{ns}` is not a namespace name (lowercase letters, digits and -, at most 63)"
        ))
    }
}

/// `cargo xtask manifests [--image IMG] [--replicas N] [--namespace NS]`:
/// the rendered manifests on stdout, for `kubectl apply -f -`.
pub(crate) fn manifests(args: &[String]) -> Result<(), String> {
    let settings = Settings::parse(args)?;
    let path = workspace_root().join(TEMPLATE);
    let template =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    print!("{}", render(&template, &settings)?);
    Ok(())
}

/// The template with the image, the replica count (the Deployment's and the
/// autoscaler's minimum, the autoscaler's maximum raised to match if needed)
/// and, given a namespace, `metadata.namespace` on every object.
pub(crate) fn render(template: &str, settings: &Settings) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut seen_image = false;
    let mut seen_replicas = false;
    let mut min_replicas = None;
    for line in template.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = &body[..body.len() - body.trim_start().len()];
        let trimmed = body.trim_start();
        if trimmed == format!("image: {TEMPLATE_IMAGE}") {
            out.push_str(&format!("{indent}image: {}\n", settings.image));
            seen_image = true;
        } else if indent == "  " && trimmed == format!("replicas: {TEMPLATE_REPLICAS}") {
            out.push_str(&format!("{indent}replicas: {}\n", settings.replicas));
            seen_replicas = true;
        } else if indent == "  " && trimmed.starts_with("minReplicas:") {
            out.push_str(&format!("{indent}minReplicas: {}\n", settings.replicas));
            min_replicas = Some(settings.replicas);
        } else if indent == "  " && trimmed.starts_with("maxReplicas:") {
            let max: u32 = trimmed["maxReplicas:".len()..]
                .trim()
                .parse()
                .map_err(|_| format!("{TEMPLATE}: bad line `{body}`"))?;
            out.push_str(&format!(
                "{indent}maxReplicas: {}\n",
                max.max(settings.replicas)
            ));
        } else {
            out.push_str(line);
            if body == "metadata:"
                && let Some(ns) = &settings.namespace
            {
                out.push_str(&format!("  namespace: {ns}\n"));
            }
        }
    }
    if !seen_image || !seen_replicas || min_replicas.is_none() {
        return Err(format!(
            "{TEMPLATE} no longer has the `image: {TEMPLATE_IMAGE}`, `replicas: {TEMPLATE_REPLICAS}` \
             and `minReplicas:` lines this command fills in"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn template() -> String {
        fs::read_to_string(workspace_root().join(TEMPLATE)).unwrap()
    }

    #[test]
    fn renders_image_replicas_and_namespace_into_every_object() {
        let settings = Settings::parse(&args(&[
            "--image",
            "registry.example/agent:1.2.3",
            "--replicas",
            "12",
            "--namespace",
            "agents",
        ]))
        .unwrap();
        let text = render(&template(), &settings).unwrap();
        assert!(text.contains("image: registry.example/agent:1.2.3\n"));
        assert!(!text.contains(TEMPLATE_IMAGE));
        assert!(text.contains("\n  replicas: 12\n"));
        assert!(text.contains("\n  minReplicas: 12\n"));
        // The template's maximum (10) is raised to the new minimum.
        assert!(text.contains("\n  maxReplicas: 12\n"));
        let objects = text.matches("\nkind: ").count() + usize::from(text.starts_with("kind: "));
        assert_eq!(text.matches("  namespace: agents\n").count(), objects);
        assert!(objects >= 4, "{objects} objects");
    }

    #[test]
    fn defaults_keep_the_template_but_the_image_tag() {
        let settings = Settings::parse(&[]).unwrap();
        let text = render(&template(), &settings).unwrap();
        assert!(text.contains(&format!("image: {}\n", default_tag())));
        assert!(text.contains("\n  replicas: 3\n"));
        assert!(text.contains("\n  maxReplicas: 10\n"));
        assert!(!text.contains("namespace:"));
        assert_eq!(text.lines().count(), template().lines().count());
    }

    #[test]
    fn bad_arguments_are_named() {
        for (list, needle) in [
            (&["--replicas", "0"][..], "--replicas"),
            (&["--replicas", "many"][..], "--replicas"),
            (&["--namespace", "Agents"][..], "namespace"),
            (&["--namespace", "-x"][..], "namespace"),
            (&["--image", "bad image"][..], "image reference"),
            (&["--image"][..], "needs a value"),
            (&["--tag", "x"][..], "unknown argument"),
        ] {
            let err = Settings::parse(&args(list)).unwrap_err();
            assert!(err.contains(needle), "{list:?}: {err}");
        }
    }

    #[test]
    fn a_template_without_the_filled_lines_is_an_error() {
        let settings = Settings::parse(&[]).unwrap();
        let err = render("kind: ConfigMap\nmetadata:\n  name: x\n", &settings).unwrap_err();
        assert!(err.contains("no longer has"), "{err}");
    }
}
