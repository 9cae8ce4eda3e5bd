//! The architecture invariants ARCHITECTURE.md states, checked on the
//! source text, so the map cannot drift from the code unnoticed: which
//! module may know zbus, HTTP, the terminal and `anyhow`. No Docker, no
//! bus: this runs in the fast tier.
//!
//! A rule names the crate paths or words that mark the knowledge and the
//! files or folders (under `src/`) allowed to hold it. Comments are not
//! code: lines starting with `//` are skipped, so a doc comment may still
//! mention hyper.

use std::path::{Path, PathBuf};

struct Rule {
    what: &'static str,
    marks: &'static [&'static str],
    allowed: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        what: "only dbus/ knows zbus",
        marks: &["zbus::", "zbus ", "#[zbus", "#[interface"],
        allowed: &["dbus/"],
    },
    Rule {
        what: "HTTP is peer/'s, plus the webhook channel, the http probe and the simulator's ports",
        marks: &[
            "hyper::",
            "hyper_util",
            "hyper_rustls",
            "http_body_util",
            "HTTP/1.1",
        ],
        allowed: &[
            "peer/",
            "notify/webhook.rs",
            "health/probe.rs",
            "engine/sim/ports.rs",
        ],
    },
    Rule {
        what: "only cli/ and the binaries know the terminal",
        marks: &["println!", "print!(", "IsTerminal", "is_terminal"],
        allowed: &["cli/", "bin/"],
    },
    Rule {
        what: "only engine/ talks to Docker",
        marks: &["bollard::", "bollard ", "docker.sock"],
        allowed: &["engine/"],
    },
    Rule {
        what: "only store/ knows SQL",
        marks: &["rusqlite"],
        allowed: &["store/"],
    },
    Rule {
        what: "only notify/ sends mail",
        marks: &["lettre"],
        allowed: &["notify/"],
    },
    Rule {
        what: "anyhow only at the binaries' edges",
        marks: &["anyhow"],
        allowed: &["bin/"],
    },
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Test modules (`tests.rs`, or what follows `#[cfg(test)]`) may print.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

#[test]
fn the_architecture_invariants_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let mut broken = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel.ends_with("/tests.rs") || rel.contains("/tests/") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for rule in RULES {
            if rule.allowed.iter().any(|a| rel.starts_with(a)) {
                continue;
            }
            for (n, line) in code_lines(&text) {
                if let Some(mark) = rule.marks.iter().find(|m| line.contains(*m)) {
                    broken.push(format!("src/{rel}:{n}: `{mark}` ({})", rule.what));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "ARCHITECTURE.md's invariants are broken (move the code or change the map):\n{}",
        broken.join("\n")
    );
}

/// The checker itself: a rule fires on code and not on comments.
#[test]
fn the_checker_sees_code_and_skips_comments() {
    let text = "// println! in a comment\nfn f() { println!(\"x\"); }\n#[cfg(test)]\nmod tests { fn g() { println!(\"y\"); } }\n";
    let hits: Vec<usize> = code_lines(text)
        .filter(|(_, l)| l.contains("println!"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(hits, vec![2]);
}
