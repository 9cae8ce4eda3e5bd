//! Cluster-wide keys: `sample_interval`, `[hosts]` and this host,
//! `[peer]`, `reload_guard` and the guard itself.

use super::*;

#[test]
fn sample_interval_is_a_duration_from_1s_to_1h() {
    let c = parse("compose_dir = \"/s\"\nsample_interval = \"2s\"\n").unwrap();
    assert_eq!(c.sample_interval, Duration::from_secs(2));
    for bad in ["0s", "500ms", "2h"] {
        let e = errors(parse(&format!("sample_interval = \"{bad}\"\n")));
        assert_eq!(
            e,
            ["/cfg/stackd.toml:1:19: expected a sampling interval from 1s to 1h"],
            "{bad}"
        );
    }
}

#[test]
fn unknown_hosts() {
    let text = "[hosts.nuc]\n[hosts.hp]\n\n[services.web]\nhost = [\"nuc\", \"pi\"]\n\n[services.db]\nauto_start = false\n";
    let e = errors(parse(text));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:5:16: unknown host `pi`: expected one of `hp`, `nuc` or \"all\"",
            "/cfg/stackd.toml:7:1: service `db` does not say which host runs it: say which host runs it (one of `hp`, `nuc`), or host = \"all\"",
        ]
    );

    // Without [hosts] the only host is this one.
    let e = errors(parse("[services.web]\nhost = \"hp\"\n"));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:8: unknown host `hp`: [hosts] is empty"),
        "{e:?}"
    );
    let c = parse("[services.web]\nhost = \"nuc\"\n[services.all]\nhost = \"all\"\n").unwrap();
    assert_eq!(c.service("all").unwrap().hosts, HostSelector::All);
    assert_eq!(c.local_services().count(), 2);
}

#[test]
fn own_host_must_be_listed() {
    let text = "[hosts.nuc]\n[hosts.hp]\n";
    let e = errors(parse_str(
        text,
        Path::new("/cfg/stackd.toml"),
        &opts("pi"),
        false,
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:1:1: this host is `pi` (given on the command line)"),
        "{e:?}"
    );

    let no_override = LoadOptions::default();
    let text = "# cluster\nhost = \"pi\"\n[hosts.nuc]\n";
    let e = errors(parse_str(
        text,
        Path::new("/cfg/stackd.toml"),
        &no_override,
        false,
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:8: this host is `pi` (from the host key)"),
        "{e:?}"
    );

    // One host: services without `host` run there.
    let c = parse("[hosts.nuc]\n[services.web]\n").unwrap();
    assert_eq!(
        c.service("web").unwrap().hosts,
        HostSelector::List(vec!["nuc".into()])
    );
}

#[test]
fn peer_listen_defaults_to_own_host_url() {
    let text = "host = \"b\"\ncompose_dir = \"/tmp\"\n[hosts.a]\npeer = \"http://127.0.0.1:7781\"\n[hosts.b]\npeer = \"http://127.0.0.2:7782\"\n[peer]\ntoken_file = \"/t\"\n";
    let cfg = parse_str(text, Path::new("/x.toml"), &LoadOptions::default(), false).unwrap();
    assert_eq!(cfg.peer.unwrap().listen, "127.0.0.2:7782");
}

#[test]
fn reload_guard_is_a_fraction_or_a_percentage() {
    assert_eq!(parse("").unwrap().reload_guard, DEFAULT_RELOAD_GUARD);
    assert_eq!(parse("reload_guard = 0.25\n").unwrap().reload_guard, 0.25);
    assert_eq!(parse("reload_guard = \"30%\"\n").unwrap().reload_guard, 0.3);
    assert_eq!(parse("reload_guard = 1\n").unwrap().reload_guard, 1.0);
    for bad in [
        "reload_guard = 2\n",
        "reload_guard = \"half\"\n",
        "reload_guard = -0.1\n",
    ] {
        let e = errors(parse(bad));
        assert!(
            e[0].starts_with("/cfg/stackd.toml:1:16: expected a fraction"),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn the_guard_trips_on_every_service_or_more_than_the_share() {
    let names = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    assert_eq!(guard_message(4, &[], 0.5), None);
    assert_eq!(guard_message(4, &names(2), 0.5), None);
    let m = guard_message(4, &names(3), 0.5).unwrap();
    assert!(
        m.contains("3 of this host's 4") && m.contains("s0, s1, s2"),
        "{m}"
    );
    assert!(guard_message(1, &names(1), 1.0)
        .unwrap()
        .contains("every one"));
    assert!(guard_message(10, &names(1), 0.0).is_some());
}
