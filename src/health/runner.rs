//! Runs every service's probe on its interval, one tokio task per service,
//! and sends the results into a channel. Independent of the rest of the
//! daemon: it takes the services and a sender, nothing else.

use std::path::Path;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{run_probe, ProbeContext, ProbeResult};
use crate::config::HealthConfig;
use crate::engine::Docker;

/// The running probes; [`ProbeRunner::stop`] (or dropping it) ends them.
pub struct ProbeRunner {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    services: Vec<String>,
}

impl ProbeRunner {
    /// The services that have a probe running.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// Stops every probe and waits until their tasks ended (a probe in
    /// flight is dropped, which kills a host command it started).
    pub async fn stop(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for ProbeRunner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts one task per service that has a probe (services whose health is
/// Docker's own healthcheck only are skipped). Each probes at once, then
/// every `interval`, each probe bounded by `timeout`, and sends
/// `(service, result)` to `out`. A task ends when the runner is stopped or
/// `out` is closed. The service directory is `compose_dir/service` and the
/// Compose project is the service name, as everywhere in stackd. Must be
/// called within a tokio runtime.
pub fn spawn_probes(
    services: Vec<(String, HealthConfig)>,
    compose_dir: &Path,
    docker: Option<Docker>,
    out: mpsc::Sender<(String, ProbeResult)>,
) -> ProbeRunner {
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut names = Vec::new();
    for (service, health) in services {
        let Some(probe) = health.probe.clone() else {
            continue;
        };
        let ctx = ProbeContext {
            dir: compose_dir.join(&service),
            project: service.clone(),
            docker: docker.clone(),
        };
        let cancel = cancel.clone();
        let out = out.clone();
        names.push(service.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(health.interval.max(MIN_INTERVAL));
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = run_probe(&probe, &ctx, health.timeout) => r,
                };
                tracing::debug!(service, ok = result.ok, "probe: {}", result.message);
                if out.send((service.clone(), result)).await.is_err() {
                    return;
                }
            }
        }));
    }
    ProbeRunner {
        cancel,
        tasks,
        services: names,
    }
}

/// Guards against a zero interval spinning a core.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Probe;

    fn health(probe: Option<Probe>, interval_ms: u64) -> HealthConfig {
        HealthConfig {
            probe,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(2),
            retries: 3,
            start_period: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn probes_on_the_interval_until_stopped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("filesvc")).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let runner = spawn_probes(
            vec![
                ("tcpsvc".into(), health(Some(Probe::Tcp { address }), 100)),
                (
                    "filesvc".into(),
                    health(
                        Some(Probe::File {
                            path: "missing".into(),
                            max_age: None,
                        }),
                        100,
                    ),
                ),
                ("dockeronly".into(), health(None, 100)),
            ],
            dir.path(),
            None,
            tx,
        );
        assert_eq!(runner.services(), ["tcpsvc", "filesvc"]);
        let mut seen: Vec<(String, bool)> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.len() < 6 {
            let (svc, r) = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("results within 5s")
                .expect("channel open");
            seen.push((svc, r.ok));
        }
        assert!(seen
            .iter()
            .filter(|(s, _)| s == "tcpsvc")
            .all(|(_, ok)| *ok));
        assert!(seen
            .iter()
            .filter(|(s, _)| s == "filesvc")
            .all(|(_, ok)| !*ok));
        assert!(seen.iter().filter(|(s, _)| s == "tcpsvc").count() >= 2);
        runner.stop().await;
        // Every sender is gone once the tasks ended: the channel closes.
        while rx.recv().await.is_some() {}
    }

    #[tokio::test]
    async fn a_closed_channel_ends_the_tasks() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let runner = spawn_probes(
            vec![(
                "x".into(),
                health(
                    Some(Probe::Command {
                        argv: vec!["true".into()],
                        container: None,
                    }),
                    100,
                ),
            )],
            Path::new("/nonexistent"),
            None,
            tx,
        );
        tokio::time::timeout(Duration::from_secs(5), runner.stop())
            .await
            .expect("tasks end on their own");
    }
}
