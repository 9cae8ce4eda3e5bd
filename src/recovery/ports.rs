//! "Who listens on TCP port N", from `/proc`: the socket inodes of
//! `/proc/net/tcp{,6}` and the processes holding them, with docker-proxy
//! read as the container it forwards to. For the message of a port conflict.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot read {path}: {source}")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A process listening on a TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    /// `None` when the socket was found but no process could be seen to own
    /// it (another user's, without the right to look).
    pub pid: Option<u32>,
    /// `/proc/PID/comm`, e.g. "nginx" or "docker-proxy".
    pub command: String,
    /// For `docker-proxy`: the container address it forwards to.
    pub forwards_to: Option<String>,
    /// For `docker-proxy`: the container that publishes the port, as
    /// Docker names it (filled in by whoever can ask Docker).
    pub container: Option<String>,
    /// The local address of the listening socket, e.g. "0.0.0.0:8080".
    pub address: String,
    pub inode: u64,
}

impl fmt::Display for PortHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.forwards_to) {
            (Some(pid), _) if self.container.is_some() => write!(
                f,
                "container {} (docker-proxy, pid {pid}, listening on {})",
                self.container.as_deref().unwrap_or_default(),
                self.address
            ),
            (Some(pid), Some(to)) => write!(
                f,
                "a Docker container at {to} (docker-proxy, pid {pid}, listening on {})",
                self.address
            ),
            (Some(pid), None) => write!(
                f,
                "process {pid} ({}) listening on {}",
                self.command, self.address
            ),
            (None, _) => write!(
                f,
                "a socket listening on {} whose process is not visible (another user's?)",
                self.address
            ),
        }
    }
}

/// Who listens on TCP `port`, over IPv4 and IPv6, from `/proc`.
pub fn port_holders(port: u16) -> Result<Vec<PortHolder>, RecoveryError> {
    port_holders_in(Path::new("/proc"), port)
}

/// [`port_holders`] over another procfs root (for tests).
pub fn port_holders_in(proc_root: &Path, port: u16) -> Result<Vec<PortHolder>, RecoveryError> {
    let mut sockets: Vec<(u64, String)> = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        let path = proc_root.join(table);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // No IPv6 in this kernel.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(RecoveryError::Proc {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        sockets.extend(listening_sockets(&text, port));
    }
    if sockets.is_empty() {
        return Ok(Vec::new());
    }
    let owners = socket_owners(proc_root, sockets.iter().map(|(i, _)| *i).collect());
    let mut out = Vec::new();
    for (inode, address) in sockets {
        let mut found = false;
        for pid in owners.get(&inode).into_iter().flatten() {
            found = true;
            let dir = proc_root.join(pid.to_string());
            let command = std::fs::read_to_string(dir.join("comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            let forwards_to = if command == "docker-proxy" {
                std::fs::read(dir.join("cmdline"))
                    .ok()
                    .and_then(|c| docker_proxy_target(&c))
            } else {
                None
            };
            out.push(PortHolder {
                pid: Some(*pid),
                command,
                forwards_to,
                container: None,
                address: address.clone(),
                inode,
            });
        }
        if !found {
            out.push(PortHolder {
                pid: None,
                command: String::new(),
                forwards_to: None,
                container: None,
                address,
                inode,
            });
        }
    }
    out.sort_by(|a, b| (a.pid, &a.address).cmp(&(b.pid, &b.address)));
    out.dedup_by(|a, b| a.pid.is_some() && a.pid == b.pid && a.address == b.address);
    Ok(out)
}

/// LISTEN sockets on `port` in a `/proc/net/tcp{,6}` table: (inode, address).
fn listening_sockets(table: &str, port: u16) -> Vec<(u64, String)> {
    const LISTEN: &str = "0A";
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != LISTEN {
            continue;
        }
        let Some((addr_hex, port_hex)) = fields[1].split_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
            continue;
        }
        let Ok(inode) = fields[9].parse::<u64>() else {
            continue;
        };
        if inode == 0 {
            continue;
        }
        out.push((inode, format!("{}:{port}", proc_address(addr_hex))));
    }
    out
}

/// `/proc/net/tcp` addresses are the raw in-memory words: 32-bit groups in
/// host byte order (little-endian on the machines we run on).
fn proc_address(hex: &str) -> String {
    let words: Vec<u32> = (0..hex.len() / 8)
        .filter_map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes);
            format!("[{}]", std::net::Ipv6Addr::from(b))
        }
        _ => hex.to_string(),
    }
}

/// inode → pids, for the wanted socket inodes, from `/proc/*/fd`.
fn socket_owners(proc_root: &Path, wanted: Vec<u64>) -> HashMap<u64, Vec<u32>> {
    let targets: HashMap<String, u64> = wanted
        .into_iter()
        .map(|i| (format!("socket:[{i}]"), i))
        .collect();
    let mut owners: HashMap<u64, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go, and other users' fds may be closed to us.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = link.to_str().and_then(|l| targets.get(l)) {
                let pids = owners.entry(*inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    owners
}

/// `docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip
/// 172.17.0.2 -container-port 80` → "172.17.0.2:80".
fn docker_proxy_target(cmdline: &[u8]) -> Option<String> {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Some(format!(
        "{}:{}",
        value("-container-ip")?,
        value("-container-port")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_net_tcp_lines() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1065 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0200007F:D2A0 01 00000000:00000000 00:00000000 00000000     0        0 2000 1 0 100 0 0 10 0\n\
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3000 1 0 100 0 0 10 0\n";
        assert_eq!(
            listening_sockets(table, 8080),
            vec![(1065, "127.0.0.1:8080".to_string())]
        );
        let table6 = "header\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 77 1 0\n";
        assert_eq!(
            listening_sockets(table6, 8080),
            vec![(77, "[::1]:8080".to_string())]
        );
    }

    #[test]
    fn reads_the_userland_proxy_s_command_line() {
        let cmd = [
            "/usr/bin/docker-proxy",
            "-proto",
            "tcp",
            "-host-ip",
            "0.0.0.0",
            "-host-port",
            "8080",
            "-container-ip",
            "172.17.0.2",
            "-container-port",
            "80",
        ]
        .join("\0");
        let cmd = cmd.as_bytes();
        assert_eq!(docker_proxy_target(cmd).as_deref(), Some("172.17.0.2:80"));
        assert_eq!(docker_proxy_target(b"nginx\0-g\0"), None);
    }

    #[test]
    fn finds_this_process_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holders = port_holders(port).unwrap();
        let me = std::process::id();
        let mine = holders
            .iter()
            .find(|h| h.pid == Some(me))
            .unwrap_or_else(|| panic!("pid {me} not among {holders:?}"));
        assert_eq!(mine.address, format!("127.0.0.1:{port}"));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(mine.command, comm.trim_end());
        assert!(mine.to_string().contains(&format!("process {me}")));
        drop(listener);
        assert!(port_holders(port).unwrap().is_empty());
    }
}
