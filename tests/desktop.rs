//! The desktop path for real (issue 16 item 4): a real notification daemon
//! from Debian (`dunst`) on a private session bus, drawing on a virtual X
//! server (`Xvfb`), receives what `stackctl notify-agent` passes on from
//! the daemon's `Alert` signal. The Notify call is seen on the session bus
//! (`dbus-monitor`), dunst counts it as shown (`dunstctl`), and a
//! screenshot of the screen (`import -window root`) is kept as
//! `target/test-artifacts/desktop-notification.png`.
//!
//! Needs the Debian packages xvfb, dunst, imagemagick and dbus (for
//! dbus-monitor); under `CI=true` a missing one fails the test.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Xvfb :N` on the first display number that is free; returns it
/// running with its display name.
fn start_xvfb(dir: &Path) -> (Killed, String) {
    for n in 90..190 {
        if Path::new(&format!("/tmp/.X{n}-lock")).exists()
            || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        {
            continue;
        }
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([
                display.as_str(),
                "-screen",
                "0",
                "1024x768x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("xvfb-{n}.log"))).unwrap())
            .spawn()
            .expect("Xvfb");
        let mut x = Killed(child);
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        for _ in 0..100 {
            if socket.exists() {
                return (x, display);
            }
            if x.0.try_wait().unwrap().is_some() {
                break; // another server took it meanwhile: next number
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("no free X display from :90 to :189");
}

fn has(name: &str) -> bool {
    which(name).is_some()
}

#[test]
fn dunst_on_xvfb_shows_the_notify_agents_alert() {
    if !have_bus() {
        return;
    }
    let parts = [
        "Xvfb",
        "dunst",
        "dunstctl",
        "import",
        "identify",
        "dbus-monitor",
    ];
    let missing: Vec<&str> = parts.iter().copied().filter(|p| !has(p)).collect();
    if !require(
        &missing.join(", "),
        missing.is_empty(),
        "apt-get install xvfb dunst imagemagick dbus",
    ) {
        return;
    }
    let env = TestEnv::new("desktop");
    let good = "[notify.desktop]\nmin_severity = \"warning\"\n";
    env.write_config(good);
    let bus = Bus::start(env.dir());
    let session = Bus::start(&env.dir().join("session"));
    let _daemon = Daemon::start(&env, &bus);

    let (_xvfb, display) = start_xvfb(env.dir());
    // An empty HOME: dunst reads no one's dunstrc but Debian's default.
    let home = env.dir().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let _dunst = Killed(
        Command::new("dunst")
            .env("DISPLAY", &display)
            .env("DBUS_SESSION_BUS_ADDRESS", session.address())
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(env.dir().join("dunst.log")).unwrap())
            .spawn()
            .expect("dunst"),
    );
    wait_until(
        Duration::from_secs(15),
        "dunst owns org.freedesktop.Notifications",
        || {
            busctl(&session, &["list", "--no-pager"])
                .stdout
                .contains("org.freedesktop.Notifications")
        },
    );

    // What crosses the session bus to dunst.
    let monitor_log = env.dir().join("monitor.log");
    let _monitor = Killed(
        Command::new("dbus-monitor")
            .args([
                "--address",
                session.address(),
                "type='method_call',interface='org.freedesktop.Notifications',member='Notify'",
            ])
            .stdout(std::fs::File::create(&monitor_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-monitor"),
    );

    // The daemon's bus is the agent's system bus; dunst's its session bus.
    let agent_log = env.dir().join("agent.log");
    let _agent = Killed(
        Command::new(env!("CARGO_BIN_EXE_stackctl"))
            .arg("notify-agent")
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .env("DBUS_SESSION_BUS_ADDRESS", session.address())
            .stdout(std::fs::File::create(&agent_log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_for_notify_agent(&bus);

    // An alert: a reload of a bad file is refused (reload-failed).
    env.write_config(&format!("{good}bogus = 1\n"));
    assert_eq!(stackctl(&env, &bus, &["reload"]).code, 1);
    env.write_config(good);

    wait_until(
        Duration::from_secs(20),
        "the Notify call reaches the session bus",
        || {
            std::fs::read_to_string(&monitor_log)
                .unwrap_or_default()
                .contains("member=Notify")
        },
    );
    let seen = std::fs::read_to_string(&monitor_log).unwrap();
    assert!(seen.contains("string \"stackd\""), "{seen}");
    assert!(seen.contains(&format!("{HOST}: ")), "{seen}");
    let dunstctl = |args: &[&str]| {
        run(
            Command::new("dunstctl")
                .args(args)
                .env("DBUS_SESSION_BUS_ADDRESS", session.address())
                .env("DISPLAY", &display),
            COMMAND_TIMEOUT,
        )
    };
    // dunst took it: shown now, or already in its history.
    wait_until(
        Duration::from_secs(10),
        "dunst counts the notification",
        || {
            let shown: u32 = ["displayed", "history"]
                .iter()
                .map(|w| {
                    dunstctl(&["count", w])
                        .stdout
                        .trim()
                        .parse::<u32>()
                        .unwrap_or(0)
                })
                .sum();
            shown >= 1
        },
    );
    let printed = std::fs::read_to_string(&agent_log).unwrap();
    assert!(printed.contains(&format!("shown: {HOST}: ")), "{printed}");

    // The screen as dunst drew it, kept for a person to look at.
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("desktop-notification.png");
    let _ = std::fs::remove_file(&shot);
    run(
        Command::new("import").args([
            "-display",
            display.as_str(),
            "-window",
            "root",
            shot.to_str().unwrap(),
        ]),
        COMMAND_TIMEOUT,
    )
    .expect_success();
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "screenshot {} is {size} bytes", shot.display());
    // Not a blank screen: dunst's frame, background and text are there.
    let colors = run(
        Command::new("identify").args(["-format", "%k", shot.to_str().unwrap()]),
        COMMAND_TIMEOUT,
    )
    .expect_success();
    let colors: u32 = colors.stdout.trim().parse().unwrap_or(0);
    assert!(
        colors > 8,
        "screenshot {} has {colors} colours: nothing drawn?",
        shot.display()
    );
}
