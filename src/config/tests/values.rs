//! Values and diagnostics: each bad key or value named at its
//! `file:line:col`, all of them at once; durations, sizes, statuses; odd
//! input that must not panic.

use super::*;

#[test]
fn unknown_key_names_file_line_col() {
    let e = errors(parse(
        "max_parallel = 2\n\n[services.web]\nauto_start = true\n  bogus = 1\n",
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:5:3: unknown field `bogus`, expected one of `host`,"),
        "{e:?}"
    );

    let e = errors(parse(
        "[services.web]\nhealth = { http = \"http://x\", intervall = \"1s\" }\n",
    ));
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:31: unknown field `intervall`"),
        "{e:?}"
    );

    let e = errors(parse("colour = \"blue\"\n"));
    assert!(
        e[0].starts_with("/cfg/stackd.toml:1:1: unknown field `colour`"),
        "{e:?}"
    );
}

#[test]
fn wrong_type_names_value() {
    let e = errors(parse("compose_dir = \"/s\"\nmax_parallel = \"four\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:16: invalid type: string \"four\", expected an integer"]
    );

    let e = errors(parse("[services.web]\nhost = 3\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:8: invalid type: integer `3`, expected a host name, a list of host names, or \"all\""]
    );

    let e = errors(parse("[services.web]\nauto_start = \"yes\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:14: invalid type: string \"yes\", expected a boolean"]
    );

    let e = errors(parse("[services]\nweb = \"x\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:7: invalid type: string \"x\", expected a [services.NAME] table"]
    );

    let e = errors(parse("[services.web]\ndepends_on = \"db\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:14: invalid type: string \"db\", expected a list of strings, e.g. [\"a\", \"b\"]"]
    );

    let e = errors(parse("[[services]]\nname = \"web\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:1:1: invalid type: sequence, expected tables written as [services.NAME]"]
    );

    // A table where a value belongs (the implicit table has no span of its own).
    let e = errors(parse("[services.web.host.x]\ny = 1\n"));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("/cfg/stackd.toml:1:"), "{e:?}");
}

#[test]
fn bad_values_are_located_and_all_reported() {
    let e = errors(parse(
        "compose_command = \"podman\"\nmax_parallel = 100\n\n[services.web]\n\
         start_timeout = \"10x\"\nhandoff = \"swap\"\nrestart = { backoff = \"5m..5s\" }\n",
    ));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:1:19: unknown compose_command \"podman\": expected \"auto\", \"docker compose\" or \"docker-compose\"",
            "/cfg/stackd.toml:2:16: expected a number of tasks from 1 to 64",
            "/cfg/stackd.toml:5:17: invalid duration \"10x\": unknown unit \"x\"; expected a number followed by ms, s, m, h or d, e.g. \"500ms\", \"10s\", \"1m30s\"",
            "/cfg/stackd.toml:6:11: unknown handoff \"swap\": expected \"stop-first\" or \"overlap\"",
            "/cfg/stackd.toml:7:23: backoff minimum is above its maximum: expected \"MIN..MAX\" with MIN <= MAX",
        ]
    );
}

#[test]
fn bad_duration_in_inline_table() {
    let e = errors(parse(
        "[services.web]\nhealth = { tcp = \"127.0.0.1:80\", interval = \"ten\" }\n",
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:45: invalid duration \"ten\": missing number"),
        "{e:?}"
    );
}

#[test]
fn durations() {
    let ok = [
        ("0", 0),
        ("500ms", 500),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("2d", 172_800_000),
        ("1m30s", 90_000),
        ("1h1m1s1ms", 3_661_001),
        ("0s", 0),
    ];
    for (s, ms) in ok {
        assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
    }
    for s in [
        "",
        "10",
        "s",
        "1x",
        "-1s",
        "1.5s",
        " 1s",
        "1s ",
        "1 s",
        "1S",
        "m5",
        "99999999999999999999s",
        "18446744073709551615d",
    ] {
        assert!(parse_duration(s).is_err(), "{s:?} should not parse");
    }
}

#[test]
fn sizes_and_statuses() {
    assert_eq!(units::parse_bytes("1024"), Ok(1024));
    assert_eq!(units::parse_bytes("512M"), Ok(512 << 20));
    assert_eq!(units::parse_bytes("512MiB"), Ok(512 << 20));
    assert_eq!(units::parse_bytes("2g"), Ok(2 << 30));
    assert!(units::parse_bytes("2X").is_err());
    assert!(units::parse_bytes("99999999999T").is_err());
    assert_eq!(units::parse_status_ranges("200-399"), Ok(vec![(200, 399)]));
    assert!(units::parse_status_ranges("399-200").is_err());
    assert!(units::parse_status_ranges("99").is_err());
    assert!(units::parse_status_ranges("").is_err());
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(units::line_col("abc", 0), (1, 1));
    assert_eq!(units::line_col("a\nbc", 3), (2, 2));
    assert_eq!(units::line_col("é = 1", 3), (1, 3));
    assert_eq!(units::line_col("é", 1), (1, 1));
    assert_eq!(units::line_col("ab", 99), (1, 3));
}

#[test]
fn odd_inputs_do_not_panic() {
    let inputs = [
        "",
        "\u{feff}",
        "[",
        "services = 1",
        "services = []",
        "[[services]]\nname = \"x\"",
        "[services.\"\"]",
        "[services.a]\nhost = []",
        "[services.a]\nhost = [\"all\", \"b\"]",
        "[services.a]\nhost = [1]",
        "[services.a]\ndepends_on = \"b\"",
        "[services.a]\nhealth = 1",
        "[services.a]\nhealth = {}\nrestart = {}\nresources = {}",
        "[services.a.health]\nhttp.x = 1",
        "[services.a]\n\"$__serde_spanned_private_start\" = 1",
        "[services.a.host]\n\"$__serde_spanned_private_start\" = 99999999",
        "max_parallel = 99999999999999999999",
        "max_parallel = 1.5",
        "[resources]\ncpu_percent = nan\nmemory = -1",
        "[peer]\nlisten = \"nowhere\"\ntls_cert = \"c\"\ntls_pin_sha256 = \"zz\"",
        "[notify.email]",
        "[notify.webhook]\nx = 1",
        "host = \"\"",
        "[hosts.all]",
    ];
    for text in inputs {
        let _ = parse(text);
        let _ = parse_str(text, Path::new("rel.toml"), &LoadOptions::default(), true);
    }
    let e = parse_sources(&[], &opts("nuc"), false).unwrap_err();
    assert_eq!(e.diagnostics().len(), 1);
}

#[test]
fn invalid_utf8_is_located() {
    let e = utf8_text(
        Path::new("/cfg/stackd.toml"),
        b"host = \"a\"\nx = \"\xc3\xa9\xff\"\n".to_vec(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("/cfg/stackd.toml:2:7: byte 0xff is not UTF-8"),
        "{e}"
    );
}

#[test]
fn missing_main_file_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nope.toml");
    match load(&path, &opts("nuc")) {
        Err(ConfigError::Io { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected Io, got {other:?}"),
    }
}
