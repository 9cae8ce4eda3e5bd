//! The simulator's control socket: how tests and a person at `stackd --sim`
//! inject failures. One command a line, one answer a line ("ok ..." or
//! "error: ..."); `ps` answers with one line per container, then "ok".
//! It exists only under `--sim`, never on a daemon that runs Docker.
//!
//! TARGET is `PROJECT` (every container of it), `PROJECT/SERVICE`, or a
//! container's name or id.
//!
//! ```text
//! ps [PROJECT]                      NAME STATE EXIT HEALTH RESTARTS per container
//! crash TARGET [CODE]               the main process exits with CODE (default 1)
//! oom TARGET                        the OOM killer: oom, die 137
//! stop TARGET | kill TARGET         a person's `docker stop` / `docker kill`
//! start TARGET                      a person's `docker start`
//! health TARGET healthy|unhealthy   the healthcheck's verdict changes now
//! fault TARGET exit CODE after MS [times N]   each start dies MS later
//! fault TARGET oom after MS [times N]
//! fault TARGET unhealthy after MS [times N]
//! fault TARGET clear
//! compose-fail PROJECT LINE...      Compose commands on PROJECT fail with LINE
//! compose-fail PROJECT clear
//! image REFERENCE ID                what the next pull of REFERENCE gets
//! slow MS                           every engine and Compose call waits MS
//! engine down | engine up           stop answering (streams end) / answer again
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::{End, Fault, FaultKind, Sim, Target};
use crate::engine::ContainerState;

/// Serves the control socket at `path` (a stale socket file is replaced)
/// until the process ends.
pub fn serve_control(sim: Arc<Sim>, path: &Path) -> std::io::Result<PathBuf> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let path = path.to_path_buf();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let sim = sim.clone();
            tokio::spawn(async move {
                let (read, mut write) = conn.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = match sim.command(&line) {
                        Ok(text) if text.is_empty() => "ok\n".to_string(),
                        Ok(text) => format!("{text}\nok\n"),
                        Err(e) => format!("error: {e}\n"),
                    };
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(path)
}

fn number<T: std::str::FromStr>(word: Option<&&str>, what: &str) -> Result<T, String> {
    let w = word.ok_or_else(|| format!("missing {what}"))?;
    w.parse()
        .map_err(|_| format!("{what}: not a number: {w:?}"))
}

impl Sim {
    /// Runs one control command; the text is the answer before "ok".
    pub fn command(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&verb, rest)) = words.split_first() else {
            return Ok(String::new());
        };
        let target = || {
            rest.first()
                .map(|t| Target::parse(t))
                .ok_or_else(|| format!("{verb}: missing TARGET"))
        };
        self.touch();
        let mut st = self.lock();
        let each = |st: &super::State, t: &Target| {
            let ids = Sim::matching(st, t);
            if ids.is_empty() {
                Err(format!("no container matches {:?}", rest[0]))
            } else {
                Ok(ids)
            }
        };
        match verb {
            "ps" => {
                let project = rest.first().copied();
                Ok(Sim::snapshot(&st, project)
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {} {} {} {}",
                            c.name,
                            c.state,
                            c.exit_code.map_or("-".to_string(), |e| e.to_string()),
                            c.health.as_deref().unwrap_or("-"),
                            c.restart_count
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            "crash" | "oom" | "stop" | "kill" => {
                let how = match verb {
                    "crash" => End::Crash(match rest.get(1) {
                        Some(_) => number(rest.get(1), "CODE")?,
                        None => 1,
                    }),
                    "oom" => End::Oom,
                    "stop" => End::Stop,
                    _ => End::Kill,
                };
                let ids = each(&st, &target()?)?;
                let running: Vec<_> = ids
                    .into_iter()
                    .filter(|id| st.containers[id].info.state == ContainerState::Running)
                    .collect();
                if running.is_empty() {
                    return Err(format!("nothing of {:?} runs", rest[0]));
                }
                for id in &running {
                    self.end(&mut st, id, how);
                }
                Ok(String::new())
            }
            "start" => {
                for id in each(&st, &target()?)? {
                    self.start_ctr(&mut st, &id).map_err(|e| e.to_string())?;
                }
                Ok(String::new())
            }
            "health" => {
                let verdict = match rest.get(1) {
                    Some(&v @ ("healthy" | "unhealthy")) => v,
                    _ => return Err("health TARGET healthy|unhealthy".to_string()),
                };
                for id in each(&st, &target()?)? {
                    self.set_health(&mut st, &id, verdict);
                }
                Ok(String::new())
            }
            "fault" => {
                let t = target()?;
                if rest.get(1) == Some(&"clear") {
                    st.faults.retain(|f| f.target != t);
                    return Ok(String::new());
                }
                let (kind, tail) = match rest.get(1) {
                    Some(&"exit") => (FaultKind::Exit(number(rest.get(2), "CODE")?), &rest[3..]),
                    Some(&"oom") => (FaultKind::Oom, &rest[2..]),
                    Some(&"unhealthy") => (FaultKind::Unhealthy, &rest[2..]),
                    _ => {
                        return Err(
                            "fault TARGET exit CODE|oom|unhealthy after MS [times N]".to_string()
                        )
                    }
                };
                if tail.first() != Some(&"after") {
                    return Err("fault: expected `after MS`".to_string());
                }
                let after = Duration::from_millis(number(tail.get(1), "MS")?);
                let left = match tail.get(2) {
                    Some(&"times") => Some(number(tail.get(3), "N")?),
                    None => None,
                    Some(w) => return Err(format!("fault: unexpected {w:?}")),
                };
                st.faults.push(Fault {
                    target: t,
                    kind,
                    after,
                    left,
                });
                Ok(String::new())
            }
            "compose-fail" => {
                let project = rest.first().ok_or("compose-fail PROJECT LINE...")?;
                if rest.get(1) == Some(&"clear") {
                    st.compose_fail.remove(*project);
                } else if rest.len() < 2 {
                    return Err("compose-fail PROJECT LINE...".to_string());
                } else {
                    st.compose_fail
                        .insert(project.to_string(), rest[1..].join(" "));
                }
                Ok(String::new())
            }
            "image" => match rest {
                [reference, id] => {
                    st.registry.insert(reference.to_string(), id.to_string());
                    Ok(String::new())
                }
                _ => Err("image REFERENCE ID".to_string()),
            },
            "slow" => {
                st.slow = Duration::from_millis(number(rest.first(), "MS")?);
                Ok(String::new())
            }
            "engine" => match rest.first() {
                Some(&"down") => {
                    drop(st);
                    self.set_down(true);
                    Ok(String::new())
                }
                Some(&"up") => {
                    st.down = false;
                    Ok(String::new())
                }
                _ => Err("engine down|up".to_string()),
            },
            other => Err(format!("unknown command {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_checked() {
        let sim = Sim::new();
        assert!(sim
            .command("crash nothing")
            .unwrap_err()
            .contains("no container"));
        assert!(sim.command("fault a/b exit x after 1").is_err());
        sim.command("fault a/b exit 3 after 100 times 2").unwrap();
        assert_eq!(sim.lock().faults[0].kind, FaultKind::Exit(3));
        assert_eq!(sim.lock().faults[0].left, Some(2));
        sim.command("fault a/b clear").unwrap();
        assert!(sim.lock().faults.is_empty());
        sim.command("compose-fail a no space left on device")
            .unwrap();
        assert_eq!(sim.lock().compose_fail["a"], "no space left on device");
        assert!(sim.command("bogus").is_err());
        assert_eq!(sim.command("ps").unwrap(), "");
    }
}
