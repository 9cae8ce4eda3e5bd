//! Small readers shared by the host and cgroup code: whole-file reads into a
//! reused buffer and `key value` lookups.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::ResourceError;

/// Reads `path` into `buf` (cleared first) and returns it as text: one
/// open, reads until end of file, close. Plain `read` calls rather than
/// `read_to_string`, which adds a `statx` and an `lseek` per file; cgroup
/// and proc files report no useful size anyway. No allocation once `buf`
/// has grown.
pub(crate) fn read_into<'a>(path: &Path, buf: &'a mut Vec<u8>) -> Result<&'a str, ResourceError> {
    let failed = |source| ResourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    buf.clear();
    let mut file = File::open(path).map_err(failed)?;
    loop {
        let start = buf.len();
        buf.resize(start + 4096, 0);
        match file.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                break;
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => return Err(failed(e)),
        }
    }
    std::str::from_utf8(buf).map_err(|_| format_error(path, "not UTF-8 text"))
}

pub(crate) fn format_error(path: &Path, what: impl Into<String>) -> ResourceError {
    ResourceError::Format {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The file's only value, as an unsigned integer.
pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, ResourceError> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format_error(path, format!("expected a number, found {t:?}")))
}

/// The value of `key` in a `key value` per line file (memory.stat,
/// cpu.stat); `None` when the key is absent.
pub(crate) fn keyed_u64(path: &Path, text: &str, key: &str) -> Result<Option<u64>, ResourceError> {
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        if parts.next() == Some(key) {
            let value = parts.next().unwrap_or("");
            return value.parse().map(Some).map_err(|_| {
                format_error(path, format!("{key}: expected a number, found {value:?}"))
            });
        }
    }
    Ok(None)
}

/// Receive and transmit byte counts from a `/proc/PID/net/dev` text,
/// summed over every interface but `lo`.
pub(crate) fn net_dev(path: &Path, text: &str) -> Result<(u64, u64), ResourceError> {
    let (mut rx, mut tx) = (0u64, 0u64);
    // Two header lines, then "  name: rx_bytes packets ... tx_bytes ...".
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let mut fields = counters.split_ascii_whitespace();
        let number = |f: Option<&str>| -> Result<u64, ResourceError> {
            f.and_then(|v| v.parse().ok())
                .ok_or_else(|| format_error(path, format!("bad counters for {}", name.trim())))
        };
        let r = number(fields.next())?;
        // Receive has 8 columns; transmit bytes is the 9th.
        let t = number(fields.nth(7))?;
        rx = rx.saturating_add(r);
        tx = tx.saturating_add(t);
    }
    Ok((rx, tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_are_found_by_whole_key() {
        let p = Path::new("memory.stat");
        let text = "total_inactive_file 5\ninactive_file 7\n";
        assert_eq!(keyed_u64(p, text, "inactive_file").unwrap(), Some(7));
        assert_eq!(keyed_u64(p, text, "total_inactive_file").unwrap(), Some(5));
        assert_eq!(keyed_u64(p, text, "active_file").unwrap(), None);
        assert!(keyed_u64(p, "inactive_file x\n", "inactive_file").is_err());
    }

    #[test]
    fn net_dev_sums_all_but_loopback() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 10 1 0 0 0 0 0 0 20 1 0 0 0 0 0 0\n  eth1:5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n";
        assert_eq!(net_dev(Path::new("dev"), text).unwrap(), (15, 26));
    }
}
