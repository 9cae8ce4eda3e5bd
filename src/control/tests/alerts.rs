//! Alert routing: `[notify.desktop]` chooses which alerts the `Alert`
//! signal carries (what `stackctl notify-agent` shows), by service and
//! severity.

use super::{wait_for, Dir, FakePeers, Host, APP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_route_carries_only_the_alerts_it_accepts() {
    let root = tempfile::tempdir().unwrap();
    let dir = Dir::new(root.path(), "a");
    let budget = "restart = { on_failure = true, max_restarts = 1, window = \"2m\", backoff = \"100ms..200ms\" }\n";
    for p in ["shown", "hidden"] {
        dir.project(p, APP);
    }
    dir.config(&format!(
        "[notify.desktop]\nmin_severity = \"critical\"\nservices = [\"shown\"]\n\n\
         [services.shown]\nauto_start = false\n{budget}\n\
         [services.hidden]\nauto_start = false\n{budget}"
    ));
    let host = Host::start(&dir, "a", "boot-1", FakePeers::new()).await;
    for p in ["shown", "hidden"] {
        host.sim(&format!("fault {p} exit 1 after 100"));
        host.manager().await.start_service(p).await.unwrap();
    }
    wait_for!("both give up", {
        host.text_property("shown", "HealthMessage")
            .await
            .starts_with("gave up")
            && host
                .text_property("hidden", "HealthMessage")
                .await
                .starts_with("gave up")
    });
    wait_for!(
        "shown's alert",
        host.alerts().iter().any(|a| a.service == "shown")
    );
    // The recovery of each was an alert too, below critical: not carried.
    let alerts = host.alerts();
    let shown: Vec<_> = alerts.iter().filter(|a| a.service == "shown").collect();
    assert_eq!(shown.len(), 1, "{alerts:?}");
    assert_eq!(shown[0].kind, "gave-up");
    assert_eq!(shown[0].severity, "critical");
    assert_eq!(shown[0].host, "a");
    assert!(!shown[0].summary.is_empty() && !shown[0].body.is_empty());
    assert!(
        alerts.iter().all(|a| a.service != "hidden"),
        "hidden's give-up is not carried: {alerts:?}"
    );
    host.stop().await;
}
