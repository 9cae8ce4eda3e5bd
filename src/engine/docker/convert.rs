//! Bollard's answers into the engine's types: containers, events, log
//! lines, and which errors mean the engine is unreachable.

use super::*;

pub(super) fn is_transport_error(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::SocketNotFoundError(_)
    )
}

/// A short reason: the innermost cause ("Connection refused (os error
/// 111)") rather than hyper's layers of wrapping.
pub(super) fn describe_transport_error(e: &BollardError) -> String {
    if let BollardError::SocketNotFoundError(path) = e {
        return format!("no socket at {path}");
    }
    if let BollardError::RequestTimeoutError = e {
        return "no answer in time".to_string();
    }
    let mut innermost: &dyn std::error::Error = e;
    while let Some(s) = innermost.source() {
        innermost = s;
    }
    innermost.to_string()
}

/// Splits log frames into lines, one buffer per stream so that partial
/// lines of stdout and stderr do not mix.
pub(super) struct LineState {
    pub(super) raw: BoxStream<'static, Result<LogOutput, BollardError>>,
    /// stdout, stderr, console (TTY) – stdin frames never carry output.
    pub(super) bufs: [Vec<u8>; 3],
    pub(super) ready: VecDeque<Result<String, BollardError>>,
    pub(super) done: bool,
}

impl LineState {
    pub(super) fn push(&mut self, chunk: LogOutput) {
        let (i, bytes) = match chunk {
            LogOutput::StdOut { message } => (0, message),
            LogOutput::StdErr { message } => (1, message),
            LogOutput::Console { message } => (2, message),
            LogOutput::StdIn { .. } => return,
        };
        let buf = &mut self.bufs[i];
        buf.extend_from_slice(&bytes);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            self.ready.push_back(Ok(line_text(&line)));
        }
    }

    pub(super) fn flush(&mut self) {
        for buf in &mut self.bufs {
            if !buf.is_empty() {
                let line = std::mem::take(buf);
                self.ready.push_back(Ok(line_text(&line)));
            }
        }
    }
}

pub(super) fn line_text(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    text.trim_end_matches(['\n', '\r']).to_string()
}

pub(super) fn non_negative(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

pub(super) fn container_info(info: ContainerInspectResponse, status: String) -> ContainerInfo {
    let labels = info
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let state = info.state.unwrap_or_default();
    let container_state = state.status.map_or(ContainerState::Unknown, |s| {
        ContainerState::parse(s.as_ref())
    });
    let finished_at_usec = state
        .finished_at
        .as_deref()
        .and_then(crate::time::parse_rfc3339_usec);
    // Docker reports exit code 0 for containers that never ran; only a
    // container that has stopped has a meaningful one.
    let exit_code = match container_state {
        ContainerState::Exited | ContainerState::Dead => state.exit_code,
        _ if finished_at_usec.is_some() => state.exit_code,
        _ => None,
    };
    ContainerInfo {
        id: info.id.unwrap_or_default(),
        name: info
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        project: label(PROJECT_LABEL),
        service: label(SERVICE_LABEL),
        number: labels.get(NUMBER_LABEL).and_then(|n| n.parse().ok()),
        oneoff: labels.get(ONEOFF_LABEL).is_some_and(|v| v == "True"),
        image: info
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .or(info.image.clone())
            .unwrap_or_default(),
        image_id: info.image.unwrap_or_default(),
        config_hash: labels.get(CONFIG_HASH_LABEL).cloned(),
        state: container_state,
        status,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        restart_count: non_negative(info.restart_count),
        memory_limit: info
            .host_config
            .as_ref()
            .and_then(|h| h.memory)
            .and_then(|m| u64::try_from(m).ok())
            .filter(|m| *m > 0),
        restart_policy: info
            .host_config
            .and_then(|h| h.restart_policy)
            .and_then(|p| p.name)
            .map(|n| n.to_string())
            .filter(|n| !n.is_empty())
            // Compose v1 leaves the name empty, which Docker treats as "no".
            .unwrap_or_else(|| "no".to_string()),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| matches!(s.as_str(), "starting" | "healthy" | "unhealthy")),
        started_at_usec: state
            .started_at
            .as_deref()
            .and_then(crate::time::parse_rfc3339_usec),
        finished_at_usec,
        pid: state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != 0),
        error: state.error.filter(|e| !e.is_empty()),
    }
}

/// Turns a Docker event into ours; None for events that are not about a
/// Compose project's container.
pub(super) fn engine_event(msg: EventMessage) -> Option<EngineEvent> {
    if msg
        .typ
        .is_some_and(|t| t != EventMessageTypeEnum::CONTAINER)
    {
        return None;
    }
    let actor = msg.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    let project = attrs.get(PROJECT_LABEL)?.clone();
    let raw_action = msg.action.unwrap_or_default();
    let (action, detail) = match raw_action.split_once(": ") {
        Some((a, d)) => (a.trim().to_string(), Some(d.trim().to_string())),
        None => (raw_action.trim().to_string(), None),
    };
    let time_usec = match (msg.time_nano, msg.time) {
        (Some(ns), _) if ns > 0 => (ns / 1_000) as u64,
        (_, Some(s)) if s > 0 => (s as u64) * 1_000_000,
        _ => 0,
    };
    Some(EngineEvent {
        project,
        service: attrs.get(SERVICE_LABEL).cloned().unwrap_or_default(),
        container_id: actor.id.unwrap_or_default(),
        container_name: attrs.get("name").cloned().unwrap_or_default(),
        action,
        detail,
        exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        time_usec,
    })
}
