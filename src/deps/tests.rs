use super::*;

fn node(name: &str, deps: &[&str], conflicts: &[&str], order: i64) -> Node {
    Node {
        name: name.into(),
        depends_on: deps.iter().map(|s| s.to_string()).collect(),
        conflicts: conflicts.iter().map(|s| s.to_string()).collect(),
        start_order: order,
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

type Waves = Vec<Vec<&'static str>>;

#[test]
fn start_waves_table() {
    let cases: Vec<(&str, Vec<Node>, Waves)> = vec![
        ("empty", vec![], vec![]),
        (
            "independent services: one wave, by start_order then name",
            vec![
                node("b", &[], &[], 0),
                node("a", &[], &[], 5),
                node("c", &[], &[], -1),
            ],
            vec![vec!["c", "b", "a"]],
        ),
        (
            "chain",
            vec![
                node("web", &["app"], &[], 0),
                node("app", &["db"], &[], 0),
                node("db", &[], &[], 0),
            ],
            vec![vec!["db"], vec!["app"], vec!["web"]],
        ),
        (
            "diamond",
            vec![
                node("top", &["l", "r"], &[], 0),
                node("l", &["base"], &[], 2),
                node("r", &["base"], &[], 1),
                node("base", &[], &[], 0),
            ],
            vec![vec!["base"], vec!["r", "l"], vec!["top"]],
        ),
        (
            "dependency on a service outside the graph holds nothing back",
            vec![node("app", &["elsewhere"], &[], 0)],
            vec![vec!["app"]],
        ),
        (
            "a cycle is broken, never looped on",
            vec![
                node("a", &["b"], &[], 0),
                node("b", &["a"], &[], 0),
                node("c", &["a"], &[], 0),
            ],
            vec![vec!["a"], vec!["b", "c"]],
        ),
        (
            "self-dependency",
            vec![node("a", &["a"], &[], 0)],
            vec![vec!["a"]],
        ),
    ];
    for (what, nodes, want) in cases {
        let g = Graph::new(nodes);
        assert_eq!(g.start_waves(), want, "{what}");
    }
}

#[test]
fn stop_waves_are_start_waves_reversed() {
    let g = Graph::new([
        node("web", &["db"], &[], 0),
        node("worker", &["db"], &[], 1),
        node("db", &[], &[], 0),
    ]);
    assert_eq!(g.start_waves(), vec![vec!["db"], vec!["web", "worker"]]);
    assert_eq!(g.stop_waves(), vec![vec!["worker", "web"], vec!["db"]]);
}

#[test]
fn start_with_dependencies_takes_only_what_is_needed() {
    let g = Graph::new([
        node("web", &["app"], &[], 0),
        node("app", &["db", "cache"], &[], 0),
        node("db", &[], &[], 0),
        node("cache", &[], &[], 0),
        node("other", &[], &[], 0),
    ]);
    assert_eq!(
        g.start_waves_with_dependencies("app").unwrap(),
        vec![vec!["cache", "db"], vec!["app"]]
    );
    assert_eq!(
        g.start_waves_with_dependencies("nope"),
        Err(DepsError::NoSuchService("nope".into()))
    );
}

#[test]
fn dependents_running_table() {
    let g = Graph::new([
        node("web", &["app"], &[], 0),
        node("app", &["db"], &[], 0),
        node("report", &["db"], &[], 0),
        node("db", &[], &[], 0),
        node("loop1", &["loop2"], &[], 0),
        node("loop2", &["loop1"], &[], 0),
    ]);
    let cases: Vec<(&str, &[&str], &[&str])> = vec![
        (
            "db",
            &["web", "app", "report", "db"],
            &["app", "report", "web"],
        ),
        ("db", &["web"], &["web"]),
        ("db", &[], &[]),
        ("app", &["web", "report"], &["web"]),
        ("web", &["app", "db"], &[]),
        ("unknown", &["web"], &[]),
        ("loop1", &["loop1", "loop2"], &["loop2"]),
    ];
    for (service, running, want) in cases {
        assert_eq!(
            g.dependents_running(service, &set(running)),
            want,
            "{service} with {running:?} running"
        );
    }
}

#[test]
fn conflicting_running_table() {
    let g = Graph::new([
        node("plex", &[], &["jellyfin"], 0),
        node("jellyfin", &[], &[], 0),
        node("emby", &[], &["plex"], 0),
        node("solo", &[], &["solo"], 0),
    ]);
    let cases: Vec<(&str, &[&str], &[&str])> = vec![
        ("plex", &["jellyfin", "emby"], &["emby", "jellyfin"]),
        ("plex", &[], &[]),
        // symmetric: jellyfin names nothing, plex names jellyfin.
        ("jellyfin", &["plex"], &["plex"]),
        ("jellyfin", &["emby"], &[]),
        ("emby", &["plex"], &["plex"]),
        ("solo", &["solo"], &[]),
        ("unknown", &["plex"], &[]),
    ];
    for (service, running, want) in cases {
        assert_eq!(
            g.conflicting_running(service, &set(running)),
            want,
            "{service} with {running:?} running"
        );
    }
}
fn steps(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| format!("{} {} ({})", s.action.as_str(), s.service, s.reason))
        .collect()
}

#[test]
fn plan_stop_table() {
    let g = Graph::new([
        node("web", &["app"], &[], 0),
        node("app", &["db"], &[], 0),
        node("report", &["db"], &[], 0),
        node("db", &[], &[], 0),
    ]);
    let running = set(&["web", "app", "report", "db"]);
    assert_eq!(
        g.plan_stop("db", &running, false),
        Err(Blocked::NeededBy(vec![
            "app".into(),
            "report".into(),
            "web".into()
        ]))
    );
    assert_eq!(
        steps(&g.plan_stop("db", &running, true).unwrap()),
        vec![
            "stop web (needs db)",
            "stop report (needs db)",
            "stop app (needs db)",
            "stop db (requested)"
        ]
    );
    assert_eq!(
        steps(&g.plan_stop("web", &running, false).unwrap()),
        vec!["stop web (requested)"]
    );
}

#[test]
fn plan_start_table() {
    let g = Graph::new([
        node("web", &["db"], &[], 0),
        node("db", &[], &[], 0),
        node("plex", &[], &["web"], 0),
        node("addon", &["plex"], &[], 0),
        node("legacy-db", &[], &["db"], 0),
    ]);
    type Case = (
        &'static str,
        &'static [&'static str],
        bool,
        Result<Vec<&'static str>, Blocked>,
    );
    let cases: Vec<Case> = vec![
        (
            "web",
            &[],
            false,
            Ok(vec!["start db (needed by web)", "start web (requested)"]),
        ),
        ("web", &["db"], false, Ok(vec!["start web (requested)"])),
        (
            "web",
            &["plex", "legacy-db"],
            false,
            Err(Blocked::Conflicts(vec!["legacy-db".into(), "plex".into()])),
        ),
        (
            "web",
            &["plex", "addon", "db"],
            true,
            Ok(vec![
                "stop addon (needs plex)",
                "stop plex (conflicts with web)",
                "start web (requested)",
            ]),
        ),
        (
            "plex",
            &["web", "db"],
            true,
            Ok(vec![
                "stop web (conflicts with plex)",
                "start plex (requested)",
            ]),
        ),
    ];
    for (service, running, force, want) in cases {
        let got = g
            .plan_start(service, &set(running), force)
            .map(|s| steps(&s));
        let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(got, want, "start {service} with {running:?}, force {force}");
    }
}

#[test]
fn tree_both_ways() {
    let g = Graph::new([
        node("web", &["app", "cache"], &[], 0),
        node("app", &["db", "elsewhere"], &[], 0),
        node("cache", &[], &[], 0),
        node("db", &[], &[], 0),
        node("loop1", &["loop2"], &[], 0),
        node("loop2", &["loop1"], &[], 0),
    ]);
    let show = |t: Vec<(usize, String)>| {
        t.into_iter()
            .map(|(d, n)| format!("{d}{n}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        show(g.tree("web", false)),
        vec!["0web", "1app", "2db", "2elsewhere", "1cache"]
    );
    assert_eq!(show(g.tree("db", true)), vec!["0db", "1app", "2web"]);
    assert_eq!(
        show(g.tree("loop1", false)),
        vec!["0loop1", "1loop2", "2loop1"]
    );
}
