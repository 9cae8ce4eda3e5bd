//! Reading what Compose prints: its version line, `config --hash`, and
//! the images of v1's `config` dump.

use super::ComposeFlavor;

/// "docker-compose version 1.29.2, build unknown" → (V1, "1.29.2");
/// "Docker Compose version v2.29.1" → (V2, "2.29.1").
pub(super) fn parse_version_output(out: &str) -> Option<(ComposeFlavor, String)> {
    let first = out.lines().find(|l| !l.trim().is_empty())?;
    let lower = first.to_ascii_lowercase();
    if !lower.contains("compose") {
        return None;
    }
    let word = first
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("version"))
        .nth(1)?;
    let version = word
        .trim_end_matches(',')
        .trim_start_matches(['v', 'V'])
        .to_string();
    let major: u32 = version.split('.').next()?.parse().ok()?;
    let flavor = if major <= 1 {
        ComposeFlavor::V1
    } else {
        ComposeFlavor::V2
    };
    Some((flavor, version))
}

/// `SERVICE HASH` lines of `config --hash` into a map; other lines are
/// skipped.
pub fn parse_config_hashes(lines: &[String]) -> std::collections::BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (service, hash) = (words.next()?, words.next()?);
            let hex = hash.len() >= 32 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            (hex && words.next().is_none()).then(|| (service.to_string(), hash.to_string()))
        })
        .collect()
}

/// Compares "2.29.1" (or "2.29.1-desktop.1") with a minimum; an unreadable
/// version counts as new.
pub(super) fn version_at_least(version: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().ok());
    let mut next = || parts.next().flatten();
    match (next(), next(), next()) {
        (Some(a), Some(b), c) => (a, b, c.unwrap_or(0)) >= min,
        _ => true,
    }
}

/// Reads the images from Compose v1's `config` output.
///
/// That output is not the user's file: it is v1's own normalised dump
/// (PyYAML, two-space indent, keys sorted, variables resolved), so every
/// service sits at indent 2 under the top-level `services:` and its keys at
/// indent 4; wrapped long values continue at a deeper indent. A service
/// with `build:` and no `image:` gets v1's default name
/// `{project}_{service}`.
pub(super) fn v1_images_from_config(project: &str, lines: &[String]) -> Vec<String> {
    let project: String = project
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let mut images = Vec::new();
    let mut in_services = false;
    // (service name, image, has build)
    let mut current: Option<(String, Option<String>, bool)> = None;
    let finish = |svc: Option<(String, Option<String>, bool)>, images: &mut Vec<String>| match svc {
        Some((_, Some(image), _)) => images.push(image),
        Some((name, None, true)) => images.push(format!("{project}_{name}")),
        _ => {}
    };
    for line in lines {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = line.trim_end();
        if body.trim().is_empty() {
            continue;
        }
        if indent == 0 {
            finish(current.take(), &mut images);
            in_services = body == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            finish(current.take(), &mut images);
            if let Some(name) = body.trim().strip_suffix(':') {
                current = Some((unquote(name), None, false));
            }
        } else if indent == 4 {
            if let Some(svc) = current.as_mut() {
                let key_value = body.trim();
                if let Some(value) = key_value.strip_prefix("image:") {
                    svc.1 = Some(unquote(value.trim()));
                } else if key_value == "build:" || key_value.starts_with("build: ") {
                    svc.2 = true;
                }
            }
        }
    }
    finish(current.take(), &mut images);
    images
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 {
        if let Some(inner) = s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            return inner.replace("''", "'");
        }
        if let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            return inner.to_string();
        }
    }
    s.to_string()
}
