//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of what this
//! host's daemon knows, read from the core at scrape time; nothing here is
//! kept between scrapes.
//!
//! Per service: its active state and health, CPU and memory from the last
//! resource sample, restarts; per host: Docker's connection, services by
//! state, stored tasks by state and by result, and whether each peer of the
//! cluster file answered its last heartbeats. `promtool check metrics`
//! lints the output in `tests/peer_conformance.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::control::Control;
use crate::health::Health;
use crate::state::ActiveState;
use crate::store::TaskState;

/// One metric family: `# HELP` and `# TYPE` written once by [`family`],
/// then a line per sample.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The whole exposition.
pub(super) fn render(control: &Control) -> String {
    let m = control.manager();
    let services = control.list_services();
    let mut out = String::new();

    family(
        &mut out,
        "stackd_build_info",
        "gauge",
        "The running stackd.",
    )
    .sample(&[("version", m.version), ("host", &m.host)], 1);
    family(
        &mut out,
        "stackd_docker_connected",
        "gauge",
        "Whether Docker answers.",
    )
    .sample(&[], u8::from(m.docker_connected));

    let mut f = family(
        &mut out,
        "stackd_services",
        "gauge",
        "Services of this host by active state.",
    );
    for state in [
        ActiveState::Active,
        ActiveState::Activating,
        ActiveState::Deactivating,
        ActiveState::Inactive,
        ActiveState::Failed,
    ] {
        let n = services.iter().filter(|s| s.active_state == state).count();
        f.sample(&[("active_state", state.as_str())], n);
    }

    let mut f = family(
        &mut out,
        "stackd_service_active",
        "gauge",
        "1 for the service's current active state.",
    );
    for s in &services {
        f.sample(
            &[
                ("service", &s.name),
                ("active_state", s.active_state.as_str()),
                ("health", s.health.as_str()),
            ],
            1,
        );
    }
    let mut f = family(
        &mut out,
        "stackd_service_healthy",
        "gauge",
        "1 while the service is healthy (its containers, Docker healthchecks and probe), else 0.",
    );
    for s in &services {
        f.sample(
            &[("service", &s.name)],
            u8::from(s.health == Health::Healthy),
        );
    }
    let mut f = family(
        &mut out,
        "stackd_service_cpu_percent",
        "gauge",
        "CPU of the service's containers in the last sample, in percent of one core.",
    );
    for s in &services {
        f.sample(&[("service", &s.name)], s.cpu_percent);
    }
    let mut f = family(
        &mut out,
        "stackd_service_memory_bytes",
        "gauge",
        "Memory of the service's containers in the last sample (without page cache, as docker stats counts it).",
    );
    for s in &services {
        f.sample(&[("service", &s.name)], s.memory_bytes);
    }
    let mut f = family(
        &mut out,
        "stackd_service_restarts",
        "gauge",
        "Restarts of the service's current containers, by Docker and by stackd's recoveries.",
    );
    for s in &services {
        f.sample(&[("service", &s.name)], s.restart_count);
    }

    let store = control.store();
    let by_state: BTreeMap<String, u64> = store
        .count_tasks_by_state()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut f = family(&mut out, "stackd_tasks", "gauge", "Stored tasks by state.");
    for state in TaskState::ALL {
        let n = by_state.get(state.as_str()).copied().unwrap_or(0);
        f.sample(&[("state", state.as_str())], n);
    }
    let mut f = family(
        &mut out,
        "stackd_task_results",
        "gauge",
        "Stored finished tasks by result (done, failed, timeout, canceled, ...).",
    );
    for (result, n) in store.count_tasks_by_result().unwrap_or_default() {
        f.sample(&[("result", &result)], n);
    }

    let peers: Vec<_> = control
        .list_hosts()
        .into_iter()
        .filter(|h| h.name != m.host)
        .collect();
    let mut f = family(
        &mut out,
        "stackd_peer_reachable",
        "gauge",
        "1 while the peer answers its heartbeats, 0 once it is lost.",
    );
    for h in &peers {
        f.sample(&[("peer", &h.name)], u8::from(h.reachable));
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_written_as_prometheus_text() {
        let mut out = String::new();
        let mut f = family(&mut out, "x_total", "gauge", "Help.");
        f.sample(&[], 1);
        f.sample(&[("a", "b\"c"), ("d", "e\\f\ng")], 2.5);
        assert_eq!(
            out,
            "# HELP x_total Help.\n# TYPE x_total gauge\nx_total 1\n\
             x_total{a=\"b\\\"c\",d=\"e\\\\f\\ng\"} 2.5\n"
        );
    }
}
