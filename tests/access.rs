//! Who may do what: reading is open to every user, changing state is not.
//! The daemon runs as root here; the caller is uid 65534 (nobody).

mod common;

use common::{
    busctl_as, busctl_error_name, containers, have_bus, have_docker, have_setpriv, stackctl_as,
    stackctl_json, start_service_call, Bus, Daemon, TestEnv,
};

const NOBODY: u32 = 65534;

#[test]
fn an_unprivileged_caller_may_read_but_not_start() {
    if !have_docker() || !have_bus() || !have_setpriv() {
        return;
    }
    let env = TestEnv::new("access_nobody");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let list = stackctl_as(NOBODY, &bus, &["list"]).expect_success();
    assert!(list.stdout.contains(&web), "{list}");
    let list = stackctl_as(NOBODY, &bus, &["--output", "json", "list"]).expect_success();
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[0]["name"], web.as_str(), "{rows}");

    let out = stackctl_as(NOBODY, &bus, &["start", &web]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("may not"),
        "says access is denied: {out}"
    );
    assert!(
        out.stderr.contains("65534"),
        "names the caller's uid: {out}"
    );

    // busctl prints only the message; the name shows in its debug log.
    let out = busctl_as(NOBODY, &bus, &start_service_call(&web));
    assert!(out.stderr.contains("may not"), "{out}");
    assert_eq!(
        busctl_error_name(Some(NOBODY), &bus, &start_service_call(&web)).as_deref(),
        Some("org.stackd1.Error.AccessDenied")
    );

    // Nothing was started, nothing queued, the desired state untouched.
    assert_eq!(containers(&web), vec![]);
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &web]);
    assert_eq!(tasks, serde_json::json!([]), "no task for {web}");
    let row = &stackctl_json(&env, &bus, &["list"])[0];
    assert_eq!(row["desired_state"], "stopped", "{row}");
}
