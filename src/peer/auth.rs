//! Bearer-token authentication for the peer endpoint: the token file, a
//! constant-time comparison, and a per-address limit on failed attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::PeerError;

/// Failed attempts allowed from one address per [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a wrong token waits for its 429 once its address is blocked.
pub const BLOCKED_DELAY: Duration = Duration::from_secs(1);

/// The shared secret every peer request but `/healthz` must present.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads the token file. A file that its group or others may read is
    /// refused: the token is a password for every host in the cluster.
    pub fn load(path: &Path) -> Result<Token, PeerError> {
        let err = |message: String| PeerError::Token {
            path: path.to_path_buf(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {mode:04o} lets other users read it; run `chmod 600 {}`",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Token::from_text(&text).ok_or_else(|| err("the file holds no token".into()))
    }

    /// The first line, trimmed; None when it is empty.
    pub fn from_text(text: &str) -> Option<Token> {
        let t = text.lines().next().unwrap_or("").trim();
        (!t.is_empty()).then(|| Token(t.as_bytes().to_vec()))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// Whether `presented` is this token, in time that depends only on the
    /// lengths, never on where the first difference is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        ct_eq(&self.0, presented)
    }
}

/// Constant-time equality: every byte is looked at whatever the contents;
/// a length mismatch is folded into the result instead of returning early.
pub fn ct_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = (expected.len() ^ presented.len()) as u64;
    for (i, e) in expected.iter().enumerate() {
        // Compare against the presented byte at the same place, or against
        // the expected byte itself when the presented value is shorter (the
        // length difference already marks it unequal).
        let p = presented.get(i).copied().unwrap_or(!*e);
        diff |= u64::from(e ^ p);
    }
    std::hint::black_box(diff) == 0
}

/// The token in `Authorization: Bearer TOKEN`, if the header has that form.
pub fn bearer(header: Option<&[u8]>) -> Option<&[u8]> {
    let h = header?;
    let prefix = b"Bearer ";
    (h.len() > prefix.len() && h[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &h[prefix.len()..])
}

/// Counts failed attempts per source address.
#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    /// True when `ip` used up its failures for the current window: wrong
    /// tokens from it are refused slowly until the window ends (a right
    /// token is still accepted; see `server::authenticate`).
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip)
            .is_some_and(|(since, n)| since.elapsed() < WINDOW && *n >= MAX_FAILURES)
    }

    /// Records a failure and returns how many `ip` has in this window.
    pub fn fail(&self, ip: IpAddr) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_is_equality() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secre"));
        assert!(!ct_eq(b"secret", b"secrets"));
        assert!(!ct_eq(b"secret", b""));
        assert!(!ct_eq(b"\xff", b""));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some(b"Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(Some(b"bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(Some(b"Basic abc")), None);
        assert_eq!(bearer(Some(b"Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn limiter_blocks_after_max_failures() {
        let l = Limiter::default();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            l.fail(ip);
        }
        assert!(!l.blocked(ip));
        l.fail(ip);
        assert!(l.blocked(ip));
        assert!(!l.blocked("127.0.0.8".parse().unwrap()));
    }

    #[test]
    fn token_file_mode_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::load(&path).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Token::load(&path).unwrap().as_str(), "s3cret");
    }
}
