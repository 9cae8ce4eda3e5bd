//! The .deb and the .rpm, met the way an administrator meets them. Heavy
//! (a release build, debootstrap, Docker), so these run only with
//! `STACKD_HEAVY_TESTS=1`, which `scripts/test-packages` sets; otherwise
//! each test returns at once. The cheap checks of what goes into the
//! packages (manual pages, completions, default config) are in tests/docs.rs.
//!
//! - the .deb builds (`scripts/build-packages`) and `lintian` finds no error;
//! - the .rpm builds and holds the same files as the .deb;
//! - the .deb installs with `dpkg -i` into a clean Debian 12 (debootstrap
//!   minbase, cached under target/packaging/, imported with `docker
//!   import`): binaries, unit (enabled), bus policy and activation, polkit
//!   action, group, state directory, conffile and manual pages are there;
//!   a local change to the conffile survives reinstalling; `dpkg -r` keeps
//!   /var/lib/stackd and `dpkg -P` deletes it and the unit's enablement.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{require, run, which, Output};

const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
}

/// The newest file in `dir` ending in `ext`.
fn newest(dir: &Path, ext: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no .{ext} in {}", dir.display()))
}

/// Builds both packages once per test run.
fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Packages> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        run(
            Command::new(common::repo().join("scripts/build-packages")).current_dir(common::repo()),
            BUILD_TIMEOUT,
        )
        .expect_success();
        Packages {
            deb: newest(&common::repo().join("target/debian"), "deb"),
            rpm: newest(&common::repo().join("target/generate-rpm"), "rpm"),
        }
    })
}

fn have_packagers() -> bool {
    let has = |sub: &str| {
        Command::new("cargo")
            .args([sub, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    require(
        "cargo-deb and cargo-generate-rpm",
        has("deb") && has("generate-rpm"),
        "cargo install cargo-deb cargo-generate-rpm --locked",
    )
}

#[test]
fn deb_passes_lintian() {
    if !common::heavy("the packaging checks")
        || !have_packagers()
        || !require(
            "lintian",
            which("lintian").is_some(),
            "apt-get install lintian",
        )
    {
        return;
    }
    let deb = &packages().deb;
    let out = run(
        Command::new("lintian")
            .args(["--fail-on", "error", "--tag-display-limit", "0", "--info"])
            .arg(deb),
        Duration::from_secs(600),
    );
    eprintln!("{out}");
    assert!(
        out.success(),
        "lintian reports errors for {}:\n{out}",
        deb.display()
    );
}

/// The files (not directories) of the .deb, as absolute paths.
fn deb_files(deb: &Path) -> BTreeSet<String> {
    let out = run(
        Command::new("dpkg").arg("-c").arg(deb),
        Duration::from_secs(60),
    )
    .expect_success();
    out.stdout
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect()
}

#[test]
fn rpm_holds_the_same_files_as_the_deb() {
    if !common::heavy("the packaging checks")
        || !have_packagers()
        || !require("rpm", which("rpm").is_some(), "apt-get install rpm")
    {
        return;
    }
    let p = packages();
    let rpm: BTreeSet<String> = run(
        Command::new("rpm")
            .args(["-qlp", "--nosignature"])
            .arg(&p.rpm),
        Duration::from_secs(60),
    )
    .expect_success()
    .stdout
    .lines()
    .map(str::to_owned)
    .collect();
    // Differences on purpose: Debian's copyright and changelog files, its
    // lintian overrides, and where each distribution's zsh looks for
    // completion functions.
    let deb: BTreeSet<String> = deb_files(&p.deb)
        .into_iter()
        .filter(|f| !f.starts_with("/usr/share/doc/stackd/"))
        .filter(|f| !f.starts_with("/usr/share/lintian/"))
        .map(|f| {
            f.replace(
                "/usr/share/zsh/vendor-completions/",
                "/usr/share/zsh/site-functions/",
            )
        })
        .collect();
    assert_eq!(
        rpm,
        deb,
        "the .rpm and the .deb hold different files:\n  only in the .rpm: {:?}\n  only in the .deb: {:?}",
        rpm.difference(&deb).collect::<Vec<_>>(),
        deb.difference(&rpm).collect::<Vec<_>>()
    );
}

/// What the container does, step by step; `set -x` shows in the output
/// which step failed.
const INSTALL_SCRIPT: &str = r#"
set -eux
dpkg -i /tmp/stackd.deb
stackd --version
stackctl --version
# The unit, enabled by postinst (no systemd runs in the container, so it is
# not started).
test -f /usr/lib/systemd/system/stackd.service
test -f /usr/lib/systemd/system/stackd.socket
test -L /etc/systemd/system/multi-user.target.wants/stackd.service
test -f /usr/share/dbus-1/system.d/org.stackd1.conf
test -f /usr/share/dbus-1/system-services/org.stackd1.service
test -f /usr/share/polkit-1/actions/org.stackd1.policy
test -f /usr/lib/systemd/catalog/stackd.catalog
test -f /usr/lib/systemd/user/stackd-notify-agent.service
test -f /usr/lib/systemd/user/stackd.service
test -f /usr/share/bash-completion/completions/stackctl
getent group stackd
test "$(stat -c %a /var/lib/stackd)" = 700
# The packaged config is valid and a conffile.
stackd --check-config
dpkg-query -W -f='${Conffiles}\n' stackd | grep -q ' /etc/stackd/stackd.toml '
MANWIDTH=80 man stackctl | grep -q 'EXIT STATUS'
MANWIDTH=80 man 8 stackd | grep -q 'SIGHUP'
MANWIDTH=80 man 5 stackd.toml | grep -q 'compose_dir'
# A local change to the conffile survives installing the package again.
sed -i 's|^compose_dir = .*|compose_dir = "/srv/stacks"|' /etc/stackd/stackd.toml
dpkg -i /tmp/stackd.deb
grep -q '^compose_dir = "/srv/stacks"' /etc/stackd/stackd.toml
# Remove keeps state and configuration; purge deletes both.
echo kept >/var/lib/stackd/marker
dpkg -r stackd
test ! -e /usr/bin/stackd
test -f /var/lib/stackd/marker
test -f /etc/stackd/stackd.toml
dpkg -P stackd
test ! -e /var/lib/stackd
test ! -e /etc/stackd/stackd.toml
# Purge also forgets that the unit was enabled.
test ! -L /etc/systemd/system/multi-user.target.wants/stackd.service
getent group stackd
echo INSTALL-CHECKS-PASSED
"#;

#[test]
fn docker_deb_installs_into_a_clean_debian_and_purges_cleanly() {
    if !common::heavy("the packaging checks")
        || !have_packagers()
        || !require(
            "debootstrap",
            which("debootstrap").is_some(),
            "apt-get install debootstrap",
        )
    {
        return;
    }
    let engine = common::try_run(
        Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]),
        Duration::from_secs(30),
    )
    .is_ok_and(|o| o.success());
    if !require(
        "the Docker engine",
        engine,
        "apt-get install docker.io; service docker start",
    ) {
        return;
    }
    let deb = packages().deb.clone();

    // The root file system, made once and cached, as a local image.
    let image = common::debian_root_image("minbase");

    let out: Output = run(
        Command::new("docker")
            .args(["run", "--rm", "--network", "none", "-v"])
            .arg(format!("{}:/tmp/stackd.deb:ro", deb.display()))
            .args([&image, "/bin/sh", "-c", INSTALL_SCRIPT]),
        Duration::from_secs(600),
    );
    eprintln!("{out}");
    assert!(
        out.success() && out.stdout.contains("INSTALL-CHECKS-PASSED"),
        "installing {} into {image} went wrong:\n{out}",
        deb.display()
    );
}
