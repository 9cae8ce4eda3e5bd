use super::*;

fn c(service: &str, state: ContainerState, hash: &str) -> ContainerInfo {
    ContainerInfo {
        id: format!("id-{service}"),
        name: format!("p-{service}-1"),
        project: "p".into(),
        service: service.into(),
        number: Some(1),
        oneoff: false,
        image: "img:1".into(),
        image_id: "sha256:aaa".into(),
        config_hash: Some(hash.into()),
        state,
        status: String::new(),
        exit_code: None,
        oom_killed: false,
        restart_count: 0,
        restart_policy: "no".into(),
        memory_limit: None,
        health: None,
        started_at_usec: None,
        finished_at_usec: None,
        pid: None,
        error: None,
    }
}

fn hashes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn images(id: Option<&str>) -> HashMap<String, Option<String>> {
    HashMap::from([("img:1".to_string(), id.map(str::to_string))])
}

/// The decision leaves the start to Compose, for a reason that says `want`.
fn assert_compose(decision: Decision, want: &str) {
    match decision {
        Decision::Compose(why) => assert!(why.contains(want), "{why:?} lacks {want:?}"),
        Decision::Start(_) => panic!("expected Compose ({want})"),
    }
}

const FILE: &str = "services:\n  db:\n    image: img:1\n    stop_grace_period: 1m30s\n  web:\n    image: img:1\n    depends_on:\n      db:\n        condition: service_healthy\n    env_file: [a.env]\n  side:\n    image: img:1\n    depends_on: [web]\n";

#[test]
fn reads_depends_on_env_files_and_grace() {
    let p = read_project(FILE).unwrap();
    assert_eq!(
        p.services["web"].depends_on,
        vec![("db".to_string(), "service_healthy".to_string())]
    );
    assert_eq!(
        p.services["side"].depends_on,
        vec![("web".to_string(), "service_started".to_string())]
    );
    assert_eq!(p.services["web"].env_files, vec!["a.env".to_string()]);
    assert_eq!(p.services["db"].stop_grace, Some(Duration::from_secs(90)));
    assert!(read_project("nope: [").is_err());
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("10"), None);
}

#[test]
fn starts_in_dependency_waves_when_everything_matches() {
    let p = read_project(FILE).unwrap();
    let h = hashes(&[("db", "h1"), ("web", "h2"), ("side", "h3")]);
    let cs = vec![
        c("db", ContainerState::Exited, "h1"),
        c("web", ContainerState::Exited, "h2"),
        c("side", ContainerState::Running, "h3"),
    ];
    let Decision::Start(plan) = decide(&p, &h, &cs, &images(Some("sha256:aaa"))) else {
        panic!("expected a start");
    };
    let names: Vec<Vec<&str>> = plan
        .waves
        .iter()
        .map(|w| w.iter().map(|s| s.service.as_str()).collect())
        .collect();
    assert_eq!(names, vec![vec!["db"], vec!["web"], vec!["side"]]);
    assert_eq!(plan.waves[0][0].stop_grace, Duration::from_secs(90));
    assert_eq!(plan.waves[2][0].stopped, Vec::<String>::new());
    assert_eq!(plan.waves[0][0].stopped, vec!["id-db".to_string()]);
}

#[test]
fn anything_else_goes_to_compose_with_its_reason() {
    let p = read_project(FILE).unwrap();
    let h = hashes(&[("db", "h1"), ("web", "h2")]);
    let ok = images(Some("sha256:aaa"));
    type Images = HashMap<String, Option<String>>;
    // db stopped as the running config wants it, then web as given.
    let db_and = |web| vec![c("db", ContainerState::Exited, "h1"), web];
    let stopped = db_and(c("web", ContainerState::Exited, "h2"));
    let cases: Vec<(Vec<ContainerInfo>, Images, &str)> = vec![
        (vec![], ok.clone(), "no container"),
        (
            vec![c("db", ContainerState::Exited, "h1")],
            ok.clone(),
            "service web has no container",
        ),
        (
            db_and(c("web", ContainerState::Exited, "OLD")),
            ok.clone(),
            "Compose file changed for service web",
        ),
        (
            stopped.clone(),
            images(Some("sha256:bbb")),
            "is not the one",
        ),
        (stopped.clone(), images(None), "not present"),
        (
            db_and(c("web", ContainerState::Paused, "h2")),
            ok.clone(),
            "is paused",
        ),
        (
            [stopped, vec![c("gone", ContainerState::Exited, "h9")]].concat(),
            ok.clone(),
            "does not deploy",
        ),
    ];
    for (cs, imgs, want) in cases {
        assert_compose(decide(&p, &h, &cs, &imgs), want);
    }
    let cycle =
        read_project("services:\n  a:\n    depends_on: [b]\n  b:\n    depends_on: [a]\n").unwrap();
    let cs = vec![
        c("a", ContainerState::Exited, "1"),
        c("b", ContainerState::Exited, "2"),
    ];
    assert!(matches!(
        decide(&cycle, &hashes(&[("a", "1"), ("b", "2")]), &cs, &ok),
        Decision::Compose(w) if w.contains("cycle")
    ));
}

#[test]
fn replicas_must_all_exist_to_start_through_the_api() {
    let file = "services:\n  web:\n    image: img:1\n    deploy:\n      replicas: 3\n  \
                old:\n    image: img:1\n    scale: 2\n  var:\n    image: img:1\n    scale: ${N}\n";
    let p = read_project(file).unwrap();
    assert_eq!(p.services["web"].replicas, Ok(3));
    assert_eq!(p.services["old"].replicas, Ok(2));
    assert!(p.services["var"].replicas.is_err());
    assert_eq!(read_project(FILE).unwrap().services["db"].replicas, Ok(1));

    let replica = |n: u32, state| {
        let mut r = c("web", state, "h1");
        r.id = format!("id-web-{n}");
        r.name = format!("p-web-{n}");
        r.number = Some(n);
        r
    };
    let h = hashes(&[("web", "h1")]);
    let ok = images(Some("sha256:aaa"));
    let p = read_project("services:\n  web:\n    image: img:1\n    deploy:\n      replicas: 3\n")
        .unwrap();
    let three = vec![
        replica(1, ContainerState::Exited),
        replica(2, ContainerState::Running),
        replica(3, ContainerState::Exited),
    ];
    let Decision::Start(plan) = decide(&p, &h, &three, &ok) else {
        panic!("all three exist: a start");
    };
    assert_eq!(plan.waves[0][0].containers.len(), 3);
    assert_eq!(
        plan.waves[0][0].stopped,
        vec!["id-web-1".to_string(), "id-web-3".to_string()]
    );
    for (cs, want) in [
        (
            three[..2].to_vec(),
            "has 2 containers; the Compose file asks for 3",
        ),
        (
            [three.clone(), vec![replica(4, ContainerState::Exited)]].concat(),
            "has 4 containers; the Compose file asks for 3",
        ),
    ] {
        assert_compose(decide(&p, &h, &cs, &ok), want);
    }
    let var = read_project("services:\n  web:\n    image: img:1\n    scale: ${N}\n").unwrap();
    assert!(matches!(
        decide(&var, &h, &three[..1], &ok),
        Decision::Compose(w) if w.contains("for Compose to read")
    ));
}

#[test]
fn hashes_from_labels_need_one_per_service() {
    let cs = vec![c("db", ContainerState::Running, "h1")];
    assert_eq!(hashes_of(&cs), Some(hashes(&[("db", "h1")])));
    let mut two = cs.clone();
    two.push(c("db", ContainerState::Running, "h2"));
    assert_eq!(hashes_of(&two), None);
    let mut unlabelled = c("db", ContainerState::Running, "x");
    unlabelled.config_hash = None;
    assert_eq!(hashes_of(&[unlabelled]), None);
}

#[test]
fn the_key_follows_the_file_and_its_env_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, FILE).unwrap();
    let (k1, _) = file_key(dir.path(), &file).unwrap();
    std::fs::write(dir.path().join("a.env"), "A=1\n").unwrap();
    let (k2, _) = file_key(dir.path(), &file).unwrap();
    assert_ne!(k1, k2);
    std::fs::write(dir.path().join(".env"), "FOO=1\n").unwrap();
    let (k3, _) = file_key(dir.path(), &file).unwrap();
    assert_ne!(k2, k3);
    assert_eq!(file_key(dir.path(), &file).unwrap().0, k3);
}
