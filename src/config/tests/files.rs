//! Files and paths: drop-ins merged in file-name order, errors across
//! files, relative paths and user mode, the compose-file check.

use super::*;

#[test]
fn dropins_merge_in_file_name_order() {
    let (tmp, stacks) = stacks(&["web", "db"]);
    let path = tmp.path().join("stackd.toml");
    write(
        &path,
        &format!(
            "compose_dir = {:?}\nmax_parallel = 2\n[services.web]\nstart_order = 3\nhealth = {{ tcp = \"127.0.0.1:80\", retries = 2 }}\n",
            stacks.to_str().unwrap()
        ),
    );
    let d = tmp.path().join("stackd.d");
    write(&d.join("20-later.toml"), "max_parallel = 8\n");
    write(
        &d.join("10-first.toml"),
        "max_parallel = 6\n[services.web]\nauto_start = false\nhealth.retries = 5\n\n[services.db]\n",
    );
    write(&d.join("notes.txt"), "not toml = [\n");
    write(&d.join(".hidden.toml"), "not toml = [\n");
    let c = load(&path, &opts("nuc")).unwrap();
    assert_eq!(
        c.files,
        vec![
            path.clone(),
            d.join("10-first.toml"),
            d.join("20-later.toml")
        ]
    );
    assert_eq!(c.max_parallel, 8);
    let web = c.service("web").unwrap();
    assert!(!web.auto_start);
    assert_eq!(web.start_order, 3);
    let health = web.health.as_ref().unwrap();
    assert_eq!(health.retries, 5);
    assert_eq!(
        health.probe,
        Some(Probe::Tcp {
            address: "127.0.0.1:80".into()
        })
    );
    assert!(c.service("db").unwrap().auto_start);

    // A parse error in a drop-in names the drop-in.
    write(
        &d.join("30-bad.toml"),
        "\n[services.web]\nauto_start = maybe\n",
    );
    let e = errors(load(&path, &opts("nuc")));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(&format!("{}:3:14: ", d.join("30-bad.toml").display())),
        "{e:?}"
    );
}

#[test]
fn cycle_across_main_file_and_dropin() {
    let (tmp, stacks) = stacks(&["a", "b", "c"]);
    let path = tmp.path().join("stackd.toml");
    write(
        &path,
        &format!(
            "compose_dir = {:?}\n\n[services.a]\ndepends_on = [\"b\"]\n[services.b]\n[services.c]\ndepends_on = [\"c\", \"zz\"]\n",
            stacks.to_str().unwrap()
        ),
    );
    let dropin = tmp.path().join("stackd.d/50-b.toml");
    write(&dropin, "[services.b]\ndepends_on = [ \"a\" ]\n");
    let e = errors(load(&path, &opts("nuc")));
    assert_eq!(
        e,
        [
            format!(
                "{}:7:15: service `c` cannot depend on itself",
                path.display()
            ),
            format!(
                "{}:7:20: depends_on names unknown service `zz`: expected one of `a`, `b`, `c`",
                path.display()
            ),
            format!("{}:2:16: dependency cycle: b -> a -> b", dropin.display()),
        ]
    );

    let mut edges = std::collections::BTreeMap::new();
    let at = |offset| raw::At { file: 0, offset };
    edges.insert("x", vec![("y", at(1))]);
    edges.insert("y", vec![("z", at(3))]);
    edges.insert("z", vec![("x", at(2)), ("y", at(4))]);
    let cycles = build::find_cycles(&edges);
    assert_eq!(
        cycles,
        [
            (at(3), "dependency cycle: y -> z -> x -> y".to_owned()),
            (at(4), "dependency cycle: z -> y -> z".to_owned()),
        ]
    );
}

#[test]
fn relative_paths_and_user_mode() {
    let c = parse("compose_dir = \"stacks\"\nstate_dir = \"state\"\n").unwrap();
    assert_eq!(c.compose_dir, PathBuf::from("/cfg/stacks"));
    assert_eq!(c.state_dir, PathBuf::from("/cfg/state"));
    assert_eq!(c.admin_group.as_deref(), Some("stackd"));
    assert_eq!(c.peer, None);
    assert_eq!(parse("admin_group = \"\"\n").unwrap().admin_group, None);

    let user = LoadOptions {
        user_mode: true,
        host_override: Some("nuc".into()),
    };
    let c = parse_str("", Path::new("/cfg/stackd.toml"), &user, false).unwrap();
    assert!(c.compose_dir.ends_with("stacks"));
    assert!(c.state_dir.ends_with("stackd"));
    assert!(c.runtime_dir.ends_with("stackd") || c.runtime_dir.ends_with("stackd/run"));
    assert!(default_config_path(true).ends_with("stackd/stackd.toml"));
    assert_eq!(
        default_config_path(false),
        PathBuf::from("/etc/stackd/stackd.toml")
    );
}

#[test]
fn missing_compose_file_is_reported_at_header() {
    let (tmp, stacks) = stacks(&["web"]);
    fs::create_dir_all(stacks.join("db")).unwrap();
    let text = format!(
        "compose_dir = {:?}\n[hosts.nuc]\n[hosts.hp]\n\n[services.web]\nhost = \"all\"\n\n  [services.db]\nhost = \"nuc\"\n\n[services.far]\nhost = \"hp\"\n",
        stacks.to_str().unwrap()
    );
    let path = tmp.path().join("stackd.toml");
    write(&path, &text);
    let e = errors(load(&path, &opts("nuc")));
    assert_eq!(
        e,
        [format!(
            "{}:8:3: service `db` runs on this host but {} has no compose file (looked for compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml)",
            path.display(),
            stacks.join("db").display()
        )]
    );
    // The first name found wins.
    write(&stacks.join("db/docker-compose.yml"), "services: {}\n");
    write(&stacks.join("db/docker-compose.yaml"), "services: {}\n");
    let c = load(&path, &opts("nuc")).unwrap();
    assert_eq!(
        c.service("db").unwrap().compose_file,
        stacks.join("db/docker-compose.yml")
    );
}

#[test]
fn compose_file_check_is_for_compose_services_only() {
    let (_tmp, dir) = stacks(&["web"]);
    let text = format!(
        "compose_dir = {dir:?}\n[services.web]\n[services.agent]\nkind = \"unit\"\nexec = [\"/bin/true\"]\n\
         [services.api]\nkind = \"external\"\nhealth.tcp = \"10.0.0.1:443\"\n[services.db]\n"
    );
    let e = errors(parse_str(
        &text,
        Path::new("/cfg/stackd.toml"),
        &opts("nuc"),
        true,
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("/cfg/stackd.toml:9:1: service `db` runs on this host but"),
        "{e:?}"
    );
}
