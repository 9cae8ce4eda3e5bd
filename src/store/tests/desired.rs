//! Desired state with its door and peer, deployed projects, metadata, and
//! the images each service ran.

use super::*;

#[test]
fn desired_state_survives_reopen() {
    let dir = temp();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.desired("web").unwrap(), None);
        store
            .set_desired("web", DesiredState::Stopped, DesiredSource::User)
            .unwrap();
        store
            .set_desired("db", DesiredState::Running, DesiredSource::Config)
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let web = store.desired("web").unwrap().unwrap();
    assert_eq!(web.state, DesiredState::Stopped);
    assert_eq!(web.source, DesiredSource::User);
    let all = store.all_desired().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["db", "web"]);
    assert_eq!(all["db"].state, DesiredState::Running);
    assert_eq!(all["db"].source, DesiredSource::Config);
}

#[test]
fn a_stop_outside_stackd_is_stored_with_its_door_and_undone_by_a_start() {
    let dir = temp();
    let store = Store::open(dir.path()).unwrap();
    store.set_stopped_outside("web", "docker stop").unwrap();
    let web = store.desired("web").unwrap().unwrap();
    assert_eq!(
        (web.state, web.source, web.detail.as_deref()),
        (
            DesiredState::Stopped,
            DesiredSource::Outside,
            Some("docker stop")
        )
    );
    assert!(web.is_decision());
    assert_eq!(
        web.set_by().to_string(),
        "stopped outside stackd (docker stop)"
    );
    store
        .set_desired("web", DesiredState::Running, DesiredSource::User)
        .unwrap();
    let web = store.desired("web").unwrap().unwrap();
    assert_eq!((web.source, web.detail), (DesiredSource::User, None));
}

#[test]
fn desired_since_moves_only_when_the_state_changes() {
    let store = Store::open_in_memory().unwrap();
    store
        .set_desired("web", DesiredState::Running, DesiredSource::Config)
        .unwrap();
    let first = store.desired("web").unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(2));
    store
        .set_desired("web", DesiredState::Running, DesiredSource::User)
        .unwrap();
    let same = store.desired("web").unwrap().unwrap();
    assert_eq!(same.since_usec, first.since_usec);
    assert_eq!(same.source, DesiredSource::User);
    std::thread::sleep(Duration::from_millis(2));
    store
        .set_desired("web", DesiredState::Stopped, DesiredSource::User)
        .unwrap();
    let changed = store.desired("web").unwrap().unwrap();
    assert!(changed.since_usec > first.since_usec);
    assert_eq!(changed.state, DesiredState::Stopped);

    store.forget_desired("web").unwrap();
    store.forget_desired("web").unwrap();
    assert_eq!(store.desired("web").unwrap(), None);
    assert!(store.all_desired().unwrap().is_empty());
}

#[test]
fn deployed_and_meta() {
    let store = Store::open_in_memory().unwrap();
    assert!(store.deployed().unwrap().is_empty());
    store.mark_deployed("web").unwrap();
    store.mark_deployed("web").unwrap();
    store.mark_deployed("db").unwrap();
    assert_eq!(
        store.deployed().unwrap(),
        BTreeSet::from(["db".to_owned(), "web".to_owned()])
    );
    store.unmark_deployed("web").unwrap();
    store.unmark_deployed("nope").unwrap();
    assert_eq!(store.deployed().unwrap(), BTreeSet::from(["db".to_owned()]));

    assert_eq!(store.meta("boot_id").unwrap(), None);
    store.set_meta("boot_id", "a").unwrap();
    store.set_meta("boot_id", "b").unwrap();
    assert_eq!(store.meta("boot_id").unwrap().as_deref(), Some("b"));
}

#[test]
fn a_move_is_stored_with_its_peer_and_kept_through_a_later_user_decision() {
    let store = Store::open_in_memory().unwrap();
    store
        .set_moved("web", DesiredState::Running, "hosta")
        .unwrap();
    let moved = store.desired("web").unwrap().unwrap();
    assert_eq!(moved.source, DesiredSource::Migrate);
    assert_eq!(moved.peer.as_deref(), Some("hosta"));
    assert_eq!(moved.set_by().to_string(), "migrate from hosta");
    // A person stops it afterwards: their word counts, the peer stays.
    store
        .set_desired("web", DesiredState::Stopped, DesiredSource::User)
        .unwrap();
    let said = store.desired("web").unwrap().unwrap();
    assert_eq!(
        (said.source, said.peer.as_deref()),
        (DesiredSource::User, Some("hosta"))
    );
    assert_eq!(said.set_by().to_string(), "user");
    store
        .set_moved("web", DesiredState::Stopped, "hostb")
        .unwrap();
    assert_eq!(
        store.desired("web").unwrap().unwrap().set_by().to_string(),
        "migrate to hostb"
    );
    // Putting back what was read earlier restores it exactly.
    store.restore_desired("web", Some(&moved)).unwrap();
    assert_eq!(store.desired("web").unwrap().unwrap(), moved);
    store.restore_desired("web", None).unwrap();
    assert_eq!(store.desired("web").unwrap(), None);
}

#[test]
fn a_kept_service_is_wanted_running_here_with_the_host_it_did_not_reach() {
    let store = Store::open_in_memory().unwrap();
    store
        .set_desired("db", DesiredState::Running, DesiredSource::User)
        .unwrap();
    store.set_kept("db", "b").unwrap();
    let kept = store.desired("db").unwrap().unwrap();
    assert_eq!(
        (
            kept.state,
            kept.source,
            kept.peer.as_deref(),
            kept.detail.as_deref()
        ),
        (
            DesiredState::Running,
            DesiredSource::Migrate,
            Some("b"),
            Some(super::KEPT)
        )
    );
    assert!(kept.is_decision() && !kept.in_doubt());
    assert_eq!(kept.set_by().to_string(), "kept here: its move to b failed");
    // The move that later succeeds clears the mark.
    store.set_moved("db", DesiredState::Stopped, "b").unwrap();
    let moved = store.desired("db").unwrap().unwrap();
    assert_eq!(moved.set_by().to_string(), "migrate to b");
    assert_eq!(moved.detail, None);
}

#[test]
fn record_image_keeps_the_one_before_the_last_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.record_image("web", "app:1", "sha256:a").unwrap());
    assert!(!store.record_image("web", "app:1", "sha256:a").unwrap());
    assert!(store.record_image("web", "app:1", "sha256:b").unwrap());
    assert!(store.record_image("web", "app:1", "sha256:c").unwrap());
    let images = store.service_images(Some("web")).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].current, "sha256:c");
    assert_eq!(images[0].previous.as_deref(), Some("sha256:b"));
    let seen: Vec<String> = store
        .seen_images()
        .unwrap()
        .into_iter()
        .map(|s| s.image_id)
        .collect();
    assert_eq!(seen, ["sha256:a", "sha256:b", "sha256:c"]);
    store.forget_image("sha256:b").unwrap();
    assert_eq!(store.service_images(None).unwrap()[0].previous, None);
    assert_eq!(store.seen_images().unwrap().len(), 2);
}
