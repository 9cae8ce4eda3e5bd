//! The architecture invariants ARCHITECTURE.md states, checked on the
//! source text, so the map cannot drift from the code unnoticed: which
//! module may know zbus, HTTP, the terminal and `anyhow`; that no file of
//! `src/` grows past [`MAX_LINES`] (bar a list of files, each held to the
//! length it has, that may only shrink); and that `tests/common` is the
//! one fixture builder of `tests/` and `benches/`. No Docker, no bus: this
//! runs in the fast tier.
//!
//! A rule names the crate paths or words that mark the knowledge and the
//! files or folders (under `src/`) allowed to hold it. Comments are not
//! code: lines starting with `//` are skipped, so a doc comment may still
//! mention hyper.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

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
            "axum",
            "reqwest",
            "HTTP/1.1",
        ],
        allowed: &[
            "peer/",
            "notify/webhook.rs",
            "health/http.rs",
            "engine/sim/ports.rs",
        ],
    },
    Rule {
        what: "only cli/ and the binaries know the terminal",
        marks: &[
            "println!",
            "print!(",
            "eprintln!",
            "eprint!(",
            "io::stdout",
            "io::stdin",
            "IsTerminal",
            "is_terminal",
            "termios",
        ],
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

/// The core holds the supervision board (`health/board.rs`) and the
/// resource figures (`resources/figures.rs`) without knowing who writes
/// them: `supervise/` and `monitor.rs` depend on `control/`, never the
/// reverse, and neither `health/` nor `resources/` knows the core (issue 14:
/// the three used to import each other in a circle).
#[test]
fn the_core_sits_below_the_supervisor_and_the_monitor() {
    const LAYERS: &[(&str, &[&str])] = &[
        ("control/", &["crate::supervise", "crate::monitor"]),
        (
            "health/",
            &["crate::supervise", "crate::monitor", "crate::control"],
        ),
        (
            "resources/",
            &["crate::supervise", "crate::monitor", "crate::control"],
        ),
    ];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (dir, marks) in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(dir), &mut files);
        assert!(!files.is_empty(), "no files under src/{dir}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in code_lines(&text) {
                if let Some(mark) = marks.iter().find(|m| line.contains(*m)) {
                    let rel = file.strip_prefix(&src).unwrap().display().to_string();
                    broken.push(format!("src/{rel}:{n}: `{mark}`"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "a lower layer names a higher one (see ARCHITECTURE.md, control/):\n{}",
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

/// A file a newcomer can read in one sitting: past this many lines, split
/// it by what its parts do (see `cli/`, one file a command, and
/// `peer/server/`).
const MAX_LINES: usize = 600;

/// The files still longer than [`MAX_LINES`], each with the most lines it
/// may have: its length when it was last measured. The list may only
/// shrink, and so may each figure: a listed file may not grow past its
/// figure, a file not on it may not grow past the limit, and an entry whose
/// file is back under the limit (or gone) fails the test until it is taken
/// off, so a split is never undone quietly. Splitting these is ongoing
/// work, not a licence to grow.
const LONG_FILES: &[(&str, usize)] = &[];

/// What the length rule says about the files under `src/`, given as
/// (path below `src/`, lines): one message per file that breaks it.
fn length_problems(files: &[(String, usize)], listed: &[(&str, usize)]) -> Vec<String> {
    let mut broken = Vec::new();
    for (rel, lines) in files {
        let lines = *lines;
        match listed.iter().find(|(path, _)| path == rel) {
            Some((_, max)) if lines > *max => broken.push(format!(
                "src/{rel}: {lines} lines, more than the {max} it is allowed on LONG_FILES: \
                 it may only shrink; split it by what its parts do"
            )),
            Some(_) => {}
            None if lines > MAX_LINES => broken.push(format!(
                "src/{rel}: {lines} lines, more than {MAX_LINES}: split it by what its parts do"
            )),
            None => {}
        }
    }
    for (path, _) in listed {
        let over = files
            .iter()
            .any(|(rel, lines)| rel == path && *lines > MAX_LINES);
        if !over {
            broken.push(format!(
                "src/{path} is no longer over {MAX_LINES} lines (or is gone): take it off LONG_FILES"
            ));
        }
    }
    broken
}

#[test]
fn no_source_file_grows_past_the_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(String, usize)> = paths
        .iter()
        .map(|file| {
            let rel = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let lines = std::fs::read_to_string(file).unwrap().lines().count();
            (rel, lines)
        })
        .collect();
    let broken = length_problems(&files, LONG_FILES);
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn a_listed_file_may_not_grow_past_its_figure() {
    let files = |compose: usize| {
        vec![
            ("engine/compose.rs".to_string(), compose),
            ("world.rs".to_string(), 120),
        ]
    };
    let listed = [("engine/compose.rs", 1182)];
    assert_eq!(length_problems(&files(1182), &listed), Vec::<String>::new());
    assert_eq!(length_problems(&files(900), &listed), Vec::<String>::new());
    assert_eq!(
        length_problems(&files(1240), &listed),
        vec![
            "src/engine/compose.rs: 1240 lines, more than the 1182 it is allowed on LONG_FILES: \
             it may only shrink; split it by what its parts do"
                .to_string()
        ]
    );
    assert_eq!(
        length_problems(&files(580), &listed),
        vec![
            "src/engine/compose.rs is no longer over 600 lines (or is gone): take it off LONG_FILES"
                .to_string()
        ]
    );
    let unlisted = [("world.rs".to_string(), 610)];
    assert_eq!(
        length_problems(&unlisted, &[]),
        vec!["src/world.rs: 610 lines, more than 600: split it by what its parts do".to_string()]
    );
}

/// Files under `tests/` and `benches/` outside `tests/common/`.
fn test_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("tests"), &mut files);
    rust_files(&root.join("benches"), &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("tests/common/") || rel.starts_with("tests/fixtures/") {
                return None;
            }
            Some((rel, std::fs::read_to_string(&f).unwrap()))
        })
        .collect()
}

/// `tests/common` is the one fixture builder of `tests/` and `benches/`:
/// only it starts a stackd daemon (`Daemon`; other tests hand it a wrapper
/// such as `prlimit` or `systemd-socket-activate` with the binary as an
/// argument) or a `dbus-daemon` (`Bus`), so every daemon a test starts
/// gets the same environment, `NOTIFY_SOCKET` and log on failure. The
/// library's unit tests cannot reach `tests/`: their one fixture builder is
/// `engine::testing`, and the test image has one builder,
/// `tests/common/image.rs`, which both include.
#[test]
fn tests_start_daemons_only_through_the_fixtures() {
    const MARKS: &[&str] = &[
        "Command::new(env!(\"CARGO_BIN_EXE_stackd\"))",
        "Command::new(\"dbus-daemon\")",
        "Command::new(\"dbus-run-session\")",
    ];
    let files = test_files();
    assert!(files.len() > 20, "found only {} test files", files.len());
    let mut broken = Vec::new();
    for (rel, text) in &files {
        if rel == "tests/tidy.rs" {
            continue;
        }
        for (n, line) in code_lines(text) {
            if let Some(mark) = MARKS.iter().find(|m| line.contains(*m)) {
                broken.push(format!(
                    "{rel}:{n}: `{mark}`: start it through tests/common (Daemon, Bus)"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The fast tier is `cargo test -- --skip docker_`: a test of `tests/` that
/// asks for the Docker engine (`have_docker`, the test image) is named
/// `docker_*`, so skipping by name leaves out every test that needs it and
/// no other. (This
/// test's own name must not hold the prefix, or the fast tier skips it.)
#[test]
fn tests_that_need_the_engine_carry_its_prefix() {
    const NEEDS: &[&str] = &[
        "have_docker()",
        "ensure_image()",
        "test_image()",
        "Command::new(\"docker\")",
    ];
    let mut broken = Vec::new();
    for (rel, text) in test_files() {
        if rel == "tests/tidy.rs" || rel.starts_with("benches/") {
            continue;
        }
        for (name, body) in test_functions(&text) {
            let needs = NEEDS.iter().any(|m| body.contains(m));
            if needs && !name.starts_with("docker_") {
                broken.push(format!("{rel}: {name} needs Docker: call it docker_{name}"));
            }
            // `--skip` matches anywhere in the name.
            if !needs && name.contains("docker_") {
                broken.push(format!(
                    "{rel}: {name} needs no Docker, but the fast tier skips it by its name"
                ));
            }
        }
    }
    // The library's unit tests ask through `engine::testing`.
    const NEEDS_UNIT: &[&str] = &["testing::docker()", "testing::compose()", "test_image()"];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, body) in test_functions(&text) {
            if !name.starts_with("docker_") && NEEDS_UNIT.iter().any(|m| body.contains(m)) {
                broken.push(format!(
                    "src/{rel}: {name} needs Docker: call it docker_{name}"
                ));
            }
            if !NEEDS_UNIT.iter().any(|m| body.contains(m)) && name.contains("docker_") {
                broken.push(format!(
                    "src/{rel}: {name} needs no Docker, but the fast tier skips it by its name"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Each `#[test]` function's name with its body and the bodies of the
/// file's functions it calls (by name, transitively): a test that asks for
/// Docker through a helper of its file needs Docker too.
fn test_functions(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    // Every `fn` of the file: (name, line, body), the body ending at the
    // first `}` at the indentation of its `fn` (rustfmt's layout).
    let mut fns: Vec<(String, usize, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let mut rest = trimmed;
        for prefix in ["pub(crate) ", "pub ", "async "] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        let Some(after) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", &line[..line.len() - trimmed.len()]);
        let end = if trimmed.ends_with('}') {
            i
        } else {
            lines[i..]
                .iter()
                .position(|l| *l == close)
                .map_or(lines.len() - 1, |p| i + p)
        };
        fns.push((name, i, lines[i..=end].join("\n")));
    }
    let is_test = |at: usize| {
        lines[..at]
            .iter()
            .rev()
            .take_while(|l| {
                let t = l.trim_start();
                t.starts_with('#') || t.starts_with("///")
            })
            .any(|l| l.contains("test]"))
    };
    let mut out = Vec::new();
    for (name, at, body) in &fns {
        if !is_test(*at) {
            continue;
        }
        let mut seen = vec![name.as_str()];
        let mut all = body.clone();
        let mut grew = true;
        while grew {
            grew = false;
            for (other, _, b) in &fns {
                if !seen.contains(&other.as_str()) && all.contains(&format!("{other}(")) {
                    seen.push(other);
                    all.push('\n');
                    all.push_str(b);
                    grew = true;
                }
            }
        }
        out.push((name.clone(), all));
    }
    out
}

/// The scanner itself: a test is tied to Docker through a helper it calls,
/// and a test that calls none is not.
#[test]
fn the_scanner_follows_helpers() {
    let text = "fn parts() -> bool {\n    have_docker()\n}\n\n#[test]\nfn a() {\n    if !parts() {\n        return;\n    }\n}\n\n#[test]\nfn b() {\n    let x = 1;\n}\n";
    let found: Vec<(String, bool)> = test_functions(text)
        .into_iter()
        .map(|(n, body)| (n, body.contains("have_docker()")))
        .collect();
    assert_eq!(
        found,
        vec![("a".to_string(), true), ("b".to_string(), false)]
    );
}
