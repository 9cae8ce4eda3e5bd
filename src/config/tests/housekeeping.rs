//! `[housekeeping]`: off unless asked for, its schedule and thresholds,
//! its errors' places.

use super::*;

#[test]
fn housekeeping_is_off_unless_asked_for() {
    let hk = parse("").unwrap().housekeeping;
    assert_eq!(hk, HousekeepingConfig::default());
    assert_eq!(hk.prune, None);
    assert_eq!(hk.disk_warning, None);
    let hk = parse("[housekeeping]\nprune = \"off\"\ndisk_warning = \"off\"\n")
        .unwrap()
        .housekeeping;
    assert_eq!(hk, HousekeepingConfig::default());
}

#[test]
fn housekeeping_prune_takes_daily_weekly_or_a_duration() {
    let day = Duration::from_secs(24 * 3600);
    for (text, want) in [
        ("daily", day),
        ("weekly", 7 * day),
        ("36h", Duration::from_secs(36 * 3600)),
        ("2s", Duration::from_secs(2)),
    ] {
        let cfg = parse(&format!("[housekeeping]\nprune = \"{text}\"\n")).unwrap();
        assert_eq!(cfg.housekeeping.prune, Some(want), "{text}");
    }
}

#[test]
fn housekeeping_disk_warning_is_a_percentage_or_a_fraction() {
    let share = |t: &str| {
        parse(&format!("[housekeeping]\ndisk_warning = {t}\n"))
            .unwrap()
            .housekeeping
            .disk_warning
    };
    assert_eq!(share("\"10%\""), Some(0.1));
    assert_eq!(share("0.25"), Some(0.25));
}

#[test]
fn housekeeping_errors_name_file_line_and_column() {
    let e = errors(parse("[housekeeping]\nprune = \"monthly\"\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:9: invalid prune schedule \"monthly\": expected \"off\", \"daily\", \"weekly\""),
        "{e:?}"
    );
    let e = errors(parse("[housekeeping]\nprune = \"500ms\"\n"));
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:9: a prune interval must be at least 1s"),
        "{e:?}"
    );
    for bad in ["\"100%\"", "0", "1.5", "\"ten\"", "-0.1"] {
        let e = errors(parse(&format!("[housekeeping]\ndisk_warning = {bad}\n")));
        assert!(
            e[0].starts_with("/cfg/stackd.toml:2:16: expected \"off\", a percentage"),
            "{bad}: {e:?}"
        );
    }
    let e = errors(parse("[housekeeping]\nprune_at = \"3:00\"\n"));
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:1: unknown field `prune_at`"),
        "{e:?}"
    );
    // Both errors of one file at once.
    let e = errors(parse(
        "[housekeeping]\nprune = \"sometimes\"\ndisk_warning = \"2\"\n",
    ));
    assert_eq!(e.len(), 2, "{e:?}");
}
