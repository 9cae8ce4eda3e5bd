//! The documentation that ships with stackd, checked against the code it
//! documents, so that neither drifts from the other:
//!
//! - `man/stackctl.1` and `man/stackd.8` are generated from the clap
//!   definitions (`stackd::cli::command()`, `stackd::cli::daemon_command()`)
//!   with clap_mangen, composed with the hand-written sections of
//!   `man/src/*.in`; the committed pages must be exactly what that gives;
//! - `completions/` likewise from clap_complete, plus the hand-written
//!   dynamic parts in `completions/src/` (service names and task ids from
//!   `stackctl __complete`);
//! - `man/stackd.toml.5` and the packaged default `packaging/stackd.toml`
//!   mention every key of the cluster file (collected from the serde structs
//!   in `src/config/raw/mod.rs`), and the page documents no key that does not
//!   exist;
//! - every page renders with `man --warnings` without a warning.
//!
//! Regenerate the generated files with
//! `STACKD_WRITE_DOCS=1 cargo test --test docs`.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap_complete::Shell;
use common::{require, which};

/// Setting this to 1 rewrites the generated man pages and completions.
const WRITE_DOCS: &str = "STACKD_WRITE_DOCS";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Compares a generated file with the committed one, or rewrites it when
/// `STACKD_WRITE_DOCS=1`.
fn check_generated(rel: &str, generated: &str) {
    let path = repo_file(rel);
    if std::env::var(WRITE_DOCS).as_deref() == Ok("1") {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, generated).unwrap();
        eprintln!("wrote {rel}");
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        return;
    }
    let first = committed
        .lines()
        .zip(generated.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(committed.lines().count().min(generated.lines().count()));
    panic!(
        "{rel} is not what the code generates (first difference at line {}:\n  committed: {:?}\n  generated: {:?}).\n\
         Regenerate it with `{WRITE_DOCS}=1 cargo test --test docs` and commit the result.",
        first + 1,
        committed.lines().nth(first).unwrap_or("<end of file>"),
        generated.lines().nth(first).unwrap_or("<end of file>"),
    );
}

// ---------------------------------------------------------------------------
// Manual pages: clap_mangen sections composed into a hand-written template
// ---------------------------------------------------------------------------

/// What clap_mangen renders, without the string definition (`.ds Aq`) it
/// repeats before every section: the page defines it once, at the top.
fn render(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(".ie \\n(.g .ds Aq") && !l.starts_with(".el .ds Aq"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The title line in the form systemd's pages have (clap_mangen leaves the
/// date field out unquoted when it is empty, which shifts the others), and
/// the `Aq` string clap_mangen's sections use.
fn title(name: &str, section: &str) -> String {
    format!(
        ".TH \"{}\" \"{section}\" \"\" \"stackd {}\" \"{name}\"\n\
         .ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n",
        name.to_uppercase(),
        env!("CARGO_PKG_VERSION")
    )
}

/// Escapes text for roff: backslashes, hyphens (as minus signs, so they
/// can be searched and copied), and a control character at a line start.
fn roff_escape(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    s.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of a clap_mangen section: its text without the `.SH` line.
fn section_body(section: &str) -> String {
    section
        .lines()
        .filter(|l| !l.starts_with(".SH "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A COMMANDS section as systemctl(1) has: each visible subcommand with its
/// synopsis, what it does, and its own options, indented below it.
fn commands_section(cmd: &clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // The global options and --help are documented once, under OPTIONS.
        let globals: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| a.get_id().to_string())
            .collect();
        let sub = &sub.clone().disable_help_flag(true).mut_args(|a| {
            let global = a.get_id() == "help" || globals.iter().any(|g| a.get_id() == g.as_str());
            a.hide(global)
        });
        let man = clap_mangen::Man::new(sub.clone());
        let synopsis = section_body(&render(|w| man.render_synopsis_section(w)));
        // The synopsis names the command by its full name ("stackctl start");
        // below the COMMANDS heading the subcommand's own name reads better.
        let synopsis = synopsis.replacen(
            &format!(
                "\\fB{}\\fR",
                roff_escape(sub.get_bin_name().unwrap_or(sub.get_name()))
            ),
            &format!("\\fB{}\\fR", roff_escape(sub.get_name())),
            1,
        );
        out.push_str(".TP\n");
        // A .TP tag is one input line.
        out.push_str(synopsis.replace('\n', " ").trim());
        out.push('\n');
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push_str(&roff_escape(&about));
        out.push('\n');
        let has_options = sub
            .get_arguments()
            .any(|a| !a.is_positional() && !a.is_hide_set());
        if has_options {
            let options = section_body(&render(|w| man.render_options_section(w)));
            out.push_str(".RS\n");
            out.push_str(&options);
            out.push_str("\n.RE\n");
        }
    }
    out
}

/// Fills a template's `@TITLE@`, `@NAME@`, `@SYNOPSIS@`, `@DESCRIPTION@`,
/// `@OPTIONS@` and `@COMMANDS@` lines with what clap_mangen renders.
fn compose_page(template_rel: &str, cmd: clap::Command, section: &str) -> String {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_owned();
    let man = clap_mangen::Man::new(cmd.clone());
    let template = read(template_rel);
    let mut out = format!(
        ".\\\" Generated by tests/docs.rs from {template_rel} and the clap definitions; do not edit.\n\
         .\\\" Regenerate: {WRITE_DOCS}=1 cargo test --test docs\n"
    );
    for line in template.lines() {
        let part = match line.trim() {
            "@TITLE@" => title(&name, section),
            "@NAME@" => render(|w| man.render_name_section(w)),
            "@SYNOPSIS@" => render(|w| man.render_synopsis_section(w)),
            "@DESCRIPTION@" => render(|w| man.render_description_section(w)),
            "@OPTIONS@" => render(|w| man.render_options_section(w)),
            "@COMMANDS@" => commands_section(&cmd),
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        out.push_str(&part);
        if !part.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn stackctl_page() -> String {
    compose_page("man/src/stackctl.1.in", stackd::cli::command(), "1")
}

fn stackd_page() -> String {
    compose_page("man/src/stackd.8.in", stackd::cli::daemon_command(), "8")
}

#[test]
fn stackctl_page_is_generated_from_the_clap_definitions() {
    check_generated("man/stackctl.1", &stackctl_page());
}

#[test]
fn stackd_page_is_generated_from_the_clap_definitions() {
    check_generated("man/stackd.8", &stackd_page());
}

/// `man --warnings` has nothing to say about any page, at 80 columns.
#[test]
fn pages_render_without_warnings() {
    if !require(
        "man (man-db) with groff",
        which("man").is_some() && which("groff").is_some(),
        "apt-get install man-db groff-base",
    ) {
        return;
    }
    for page in ["man/stackctl.1", "man/stackd.8", "man/stackd.toml.5"] {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(repo_file(page))
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .expect("run man");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "man -l {page} failed: {warnings}");
        assert!(
            warnings.trim().is_empty(),
            "man --warnings -l {page} warns:\n{warnings}"
        );
        assert!(!out.stdout.is_empty(), "man -l {page} printed nothing");
    }
}

// ---------------------------------------------------------------------------
// Shell completions: clap_complete plus the hand-written dynamic parts
// ---------------------------------------------------------------------------

/// stackctl's command without its hidden subcommands (clap_complete would
/// offer `__complete`, which is for the scripts, not for people).
fn visible_command() -> clap::Command {
    let cmd = stackd::cli::command();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut visible = clap::Command::new("stackctl")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .disable_help_subcommand(cmd.is_disable_help_subcommand_set());
    for arg in cmd.get_arguments() {
        visible = visible.arg(arg.clone());
    }
    visible.subcommands(subs)
}

/// Replaces every `from` in `text`, and insists there is one: a change in
/// clap_complete's output must not silently drop the dynamic completion.
fn replace_all(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "clap_complete's zsh script no longer contains {from:?}: update completion() in tests/docs.rs"
    );
    text.replace(from, to)
}

fn completion(shell: Shell) -> String {
    let mut cmd = visible_command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "stackctl", &mut out);
    let mut generated = String::from_utf8(out).unwrap();
    let (extra, at_end) = match shell {
        Shell::Bash => ("completions/src/stackctl.bash", true),
        Shell::Fish => ("completions/src/stackctl.fish", true),
        Shell::Zsh => ("completions/src/_stackctl", false),
        _ => unreachable!(),
    };
    let header = format!(
        "# Generated by tests/docs.rs (clap_complete, then {extra}); do not edit.\n\
         # Regenerate: {WRITE_DOCS}=1 cargo test --test docs\n\n"
    );
    if at_end {
        return format!("{header}{generated}\n{}", read(extra));
    }
    // zsh: service names and task ids from the helpers in the extra part,
    // which must come before the generated script's last lines (they run
    // the completion when the file is autoloaded).
    for (from, to) in [
        ("'*::names:_default'", "'*::names:_stackctl_services'"),
        ("':name:_default'", "':name:_stackctl_services'"),
        (":SERVICE:_default'", ":SERVICE:_stackctl_services'"),
        ("':id:_default'", "':id:_stackctl_tasks'"),
        ("'*::ids:_default'", "'*::ids:_stackctl_tasks'"),
    ] {
        generated = replace_all(&generated, from, to);
    }
    let trailer = generated
        .find("if [ \"$funcstack[1]\" = \"_stackctl\" ]")
        .expect("clap_complete's zsh script ends with the funcstack test");
    format!(
        "{header}{}{}{}",
        &generated[..trailer],
        read(extra),
        &generated[trailer..]
    )
}

#[test]
fn completions_are_generated_from_the_clap_definitions() {
    check_generated("completions/stackctl.bash", &completion(Shell::Bash));
    check_generated("completions/_stackctl", &completion(Shell::Zsh));
    check_generated("completions/stackctl.fish", &completion(Shell::Fish));
}

// ---------------------------------------------------------------------------
// stackd.toml(5) and the packaged default file know every key
// ---------------------------------------------------------------------------

/// The tables of the cluster file, by the raw struct that reads them, as
/// the man page titles their subsections. A struct missing here fails the
/// test: add its table to the page and to this list.
const TABLES: &[(&str, &str)] = &[
    ("RawFile", "Top-level keys"),
    ("RawHost", "[hosts.NAME]"),
    ("RawPeer", "[peer]"),
    ("RawService", "[services.NAME]"),
    ("RawHealth", "[services.NAME.health]"),
    ("RawRestart", "[services.NAME.restart]"),
    ("RawResources", "[resources]"),
    ("RawNotify", "[notify]"),
    ("RawEmail", "[notify.email]"),
    ("RawWebhook", "[notify.webhook.NAME]"),
    ("RawDesktop", "[notify.desktop]"),
    ("RawHousekeeping", "[housekeeping]"),
];

/// One field of a raw struct.
struct Key {
    table: &'static str,
    name: String,
    /// Holds a sub-table (`Option<RawX>`, `LocMap<RawX>`), not a value.
    is_table: bool,
    /// Accepted by the parser only to be refused (`L<toml::Value>`).
    refused: bool,
}

/// Every field of every `#[derive(serde::Deserialize)]` struct in
/// `src/config/raw/mod.rs`, by a plain scan of the source: a struct's fields are
/// the `pub NAME: TYPE,` lines between its `struct Raw… {` and `}`.
fn config_keys() -> Vec<Key> {
    let source = read("src/config/raw/mod.rs");
    let mut keys = Vec::new();
    let mut current: Option<&'static str> = None;
    let mut derive_seen = false;
    for line in source.lines() {
        let line = line.trim();
        if line.starts_with("#[derive(") {
            derive_seen = line.contains("serde::Deserialize");
            continue;
        }
        if let Some(rest) = line.strip_prefix("pub(crate) struct ") {
            let name = rest.split([' ', '{', '(', '<']).next().unwrap();
            if derive_seen && rest.ends_with('{') {
                let table = TABLES
                    .iter()
                    .find(|(s, _)| *s == name)
                    .unwrap_or_else(|| {
                        panic!("src/config/raw/mod.rs: struct {name} reads a table the test does not know: add it to TABLES and document it in man/stackd.toml.5")
                    })
                    .1;
                current = Some(table);
            }
            derive_seen = false;
            continue;
        }
        if line == "}" {
            current = None;
            continue;
        }
        let (Some(table), Some(field)) = (current, line.strip_prefix("pub ")) else {
            continue;
        };
        let Some((name, ty)) = field.split_once(':') else {
            continue;
        };
        let ty = ty.trim();
        keys.push(Key {
            table,
            name: name.trim().to_owned(),
            is_table: ty.starts_with("Option<Raw") || ty.starts_with("LocMap<"),
            refused: ty.contains("toml::Value"),
        });
    }
    assert!(
        keys.len() > 40,
        "found only {} keys in src/config/raw/mod.rs: has its layout changed?",
        keys.len()
    );
    keys
}

/// The keys documented in man/stackd.toml.5, by subsection title: every
/// `.TP` tag that starts with `\fBkey\fR`.
fn documented_keys() -> Vec<(String, BTreeSet<String>)> {
    let page = read("man/stackd.toml.5");
    let mut out: Vec<(String, BTreeSet<String>)> = Vec::new();
    let mut lines = page.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(title) = line.strip_prefix(".SS ") {
            let title = title
                .trim_matches('"')
                .replace("\\&", "")
                .replace("\\-", "-");
            out.push((title, BTreeSet::new()));
        } else if line == ".TP" {
            let Some(tag) = lines.peek() else { continue };
            let Some(rest) = tag.strip_prefix("\\fB") else {
                continue;
            };
            let Some(end) = rest.find("\\fR") else {
                continue;
            };
            if let Some((_, keys)) = out.last_mut() {
                keys.insert(rest[..end].replace("\\-", "-"));
            }
        }
    }
    out
}

#[test]
fn config_page_documents_every_key_and_no_other() {
    let keys = config_keys();
    let documented = documented_keys();
    let section = |table: &str| {
        documented
            .iter()
            .find(|(title, _)| title.split(" and ").any(|t| t == table))
            .map(|(_, keys)| keys)
    };
    let mut missing = Vec::new();
    for key in keys
        .iter()
        .filter(|k| !k.is_table || k.table == "[services.NAME]")
    {
        if !section(key.table).is_some_and(|s| s.contains(&key.name)) {
            missing.push(format!("{} {}", key.table, key.name));
        }
    }
    assert!(
        missing.is_empty(),
        "man/stackd.toml.5 has no entry (`.TP` then `\\fBkey\\fR …` under `.SS \"TABLE\"`) for: {}",
        missing.join(", ")
    );
    let mut unknown = Vec::new();
    for (title, names) in &documented {
        let Some((_, table)) = TABLES
            .iter()
            .find(|(_, t)| title.split(" and ").any(|part| part == *t))
        else {
            panic!("man/stackd.toml.5: subsection {title:?} is no table of the cluster file");
        };
        for name in names {
            if !keys.iter().any(|k| k.table == *table && &k.name == name) {
                unknown.push(format!("{title} {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "man/stackd.toml.5 documents keys the cluster file does not have: {}",
        unknown.join(", ")
    );
}

#[test]
fn packaged_default_config_shows_every_key_and_is_valid() {
    let text = read("packaging/stackd.toml");
    let mut missing = Vec::new();
    for key in config_keys().iter().filter(|k| !k.is_table && !k.refused) {
        let written = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.strip_prefix(key.name.as_str())
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        if !written {
            missing.push(format!("{} {}", key.table, key.name));
        }
    }
    assert!(
        missing.is_empty(),
        "packaging/stackd.toml does not show (commented, with its default): {}",
        missing.join(", ")
    );

    let opts = stackd::config::LoadOptions {
        user_mode: false,
        host_override: Some("packaged".into()),
    };
    let cfg = stackd::config::parse_str(&text, Path::new("/etc/stackd/stackd.toml"), &opts, true)
        .unwrap_or_else(|e| panic!("packaging/stackd.toml is invalid:\n{e}"));
    assert_eq!(cfg.compose_dir, Path::new("/opt/stacks"));
    assert!(cfg.services.is_empty(), "the default file has no services");
    assert!(cfg.hosts.is_empty(), "the default file is a single host");
}

/// The bash script completes service names and task ids from what
/// `stackctl __complete` prints (here a stand-in on `$PATH`), passes
/// `--user` on, and leaves options to the generated part.
#[test]
fn bash_completion_asks_stackctl_for_names_and_ids() {
    if !require("bash", which("bash").is_some(), "apt-get install bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("stackctl");
    fs::write(
        &fake,
        "#!/bin/sh\n\
         case \"$*\" in\n\
         '__complete services') printf 'web\\tactive running\\nworker\\tinactive dead\\ndb\\tactive running\\n' ;;\n\
         '--user __complete services') printf 'mine\\tactive running\\n' ;;\n\
         '__complete tasks') printf '41\\tdeploy web succeeded\\n42\\tupdate web running\\n' ;;\n\
         esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let complete = |line: &str| {
        let script = format!(
            "source {}\nCOMP_WORDS=({line})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
             COMP_LINE=\"{line}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
             _stackctl_dynamic stackctl \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\" | sort | paste -sd' '\n",
            repo_file("completions/stackctl.bash").display()
        );
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        let out = Command::new("bash")
            .args(["--norc", "-c", &script])
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(complete("stackctl start w"), "web worker");
    assert_eq!(complete("stackctl status ''"), "db web worker");
    assert_eq!(complete("stackctl --user stop ''"), "mine");
    assert_eq!(complete("stackctl cancel 4"), "41 42");
    assert_eq!(complete("stackctl tasks --service d"), "db");
    assert_eq!(complete("stackctl sta"), "start status");
    assert!(complete("stackctl start --no").contains("--no-block"));
}

/// The .deb's version comes from Cargo.toml, its changelog from
/// packaging/debian/changelog: a new version needs a new entry there.
#[test]
fn debian_changelog_has_an_entry_for_this_version() {
    let changelog = read("packaging/debian/changelog");
    let first = changelog.lines().next().unwrap_or_default();
    let expected = format!("stackd ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&expected),
        "packaging/debian/changelog starts with {first:?}, expected an entry {expected:?}…: \
         add one for the new version (dch -v VERSION-1)"
    );
}
