//! The body of `PUT /v1/services/{name}/volumes/{volume}`: a volume's tar
//! stream as Docker's archive API gives it, followed by the 32 bytes of
//! the SHA-256 of everything before them. The sender computes the digest
//! while it streams (one pass, no staging copy); the receiver holds the
//! last 32 bytes back, hashes the rest as it passes it on to Docker, and
//! compares at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use sha2::{Digest, Sha256};

/// Length of the trailing digest.
pub(crate) const DIGEST_LEN: usize = 32;

/// How long the receiver waits for the next piece of the body before it
/// takes the sender for gone.
pub(crate) const IDLE: Duration = Duration::from_secs(30);

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the sender has sent so far; the client's stall watchdog reads it.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) bytes: AtomicU64,
    pub(crate) done: AtomicBool,
    pub(crate) sha256: Mutex<String>,
}

/// The request body for `tar`, with the digest after it. A failing `tar`
/// fails the body, so the request is cut off and the receiver sees a body
/// that ended early.
pub(crate) fn seal(
    tar: BoxStream<'static, Result<Bytes, String>>,
) -> (UnsyncBoxBody<Bytes, std::io::Error>, Arc<Progress>) {
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let frames = stream::unfold(
        (tar, Some(Sha256::new()), p),
        |(mut tar, hasher, p)| async move {
            let mut hasher = hasher?;
            match tar.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    p.bytes
                        .fetch_add(u64::try_from(chunk.len()).unwrap_or(0), Ordering::Relaxed);
                    Some((Ok(Frame::data(chunk)), (tar, Some(hasher), p)))
                }
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (tar, None, p))),
                None => {
                    let digest = hasher.finalize();
                    if let Ok(mut s) = p.sha256.lock() {
                        *s = hex(&digest);
                    }
                    p.done.store(true, Ordering::Relaxed);
                    let tail = Bytes::copy_from_slice(&digest);
                    Some((Ok(Frame::data(tail)), (tar, None, p)))
                }
            }
        },
    );
    (BodyExt::boxed_unsync(StreamBody::new(frames)), progress)
}

/// The receiver's verdict, known once the tar stream has ended: the
/// bytes and the SHA-256 that arrived and matched, or why not.
#[derive(Clone, Default)]
pub(crate) struct Check(Arc<Mutex<Option<Verdict>>>);

/// The bytes and SHA-256 that arrived and matched, or why not.
type Verdict = Result<(u64, String), String>;

impl Check {
    fn set(&self, r: Verdict) {
        if let Ok(mut v) = self.0.lock() {
            v.get_or_insert(r);
        }
    }

    pub(crate) fn verdict(&self) -> Verdict {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.take())
            .unwrap_or_else(|| Err("the body was not read to its end".to_string()))
    }
}

/// What a sealed stream of `chunks` unseals to, fed piece by piece: the
/// payload to pass on now, and, at the end, the verdict.
struct Unsealer {
    tail: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
}

impl Unsealer {
    fn new() -> Unsealer {
        Unsealer {
            tail: Vec::with_capacity(DIGEST_LEN * 2),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The part of `chunk` (with what was held back) that is surely
    /// payload; the last [`DIGEST_LEN`] bytes seen are held back.
    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if self.tail.len() + chunk.len() <= DIGEST_LEN {
            self.tail.extend_from_slice(chunk);
            return Bytes::new();
        }
        let mut all = std::mem::take(&mut self.tail);
        all.extend_from_slice(chunk);
        let keep = all.split_off(all.len() - DIGEST_LEN);
        self.tail = keep;
        self.hasher.update(&all);
        self.bytes += u64::try_from(all.len()).unwrap_or(0);
        Bytes::from(all)
    }

    fn finish(self) -> Verdict {
        if self.tail.len() < DIGEST_LEN {
            return Err(format!(
                "the body is shorter than its {DIGEST_LEN}-byte SHA-256 trailer"
            ));
        }
        let got = self.hasher.finalize();
        if got.as_slice() != self.tail.as_slice() {
            return Err(format!(
                "checksum mismatch: {} bytes arrived with SHA-256 {}, the sender computed {}",
                self.bytes,
                hex(&got),
                hex(&self.tail)
            ));
        }
        Ok((self.bytes, hex(&got)))
    }
}

/// The payload of a sealed body as it arrives, and the check that holds
/// the verdict once the stream has ended. A body that breaks off, or
/// pauses longer than [`IDLE`], ends the stream with a failed verdict.
pub(crate) fn unseal(body: Incoming) -> (BoxStream<'static, Bytes>, Check) {
    let check = Check::default();
    let c = check.clone();
    let out = stream::unfold(
        (body, Some(Unsealer::new()), c),
        |(mut body, state, c)| async move {
            let mut u = state?;
            loop {
                match tokio::time::timeout(IDLE, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        let out = u.feed(&data);
                        if !out.is_empty() {
                            return Some((out, (body, Some(u), c)));
                        }
                    }
                    Ok(Some(Err(e))) => {
                        c.set(Err(format!("the body was cut short: {e}")));
                        return None;
                    }
                    Ok(None) => {
                        c.set(u.finish());
                        return None;
                    }
                    Err(_) => {
                        c.set(Err(format!(
                            "the body stopped coming ({} s without data)",
                            IDLE.as_secs()
                        )));
                        return None;
                    }
                }
            }
        },
    );
    (out.boxed(), check)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(payload: &[u8]) -> Vec<u8> {
        let mut v = payload.to_vec();
        v.extend_from_slice(&Sha256::digest(payload));
        v
    }

    /// Feeds `body` in pieces of `step` bytes; the payload passed on and
    /// the verdict.
    fn unseal_in(body: &[u8], step: usize) -> (Vec<u8>, Verdict) {
        let mut u = Unsealer::new();
        let mut out = Vec::new();
        for piece in body.chunks(step.max(1)) {
            out.extend_from_slice(&u.feed(piece));
        }
        (out, u.finish())
    }

    #[test]
    fn the_payload_passes_and_the_trailer_is_checked_whatever_the_pieces() {
        let payload: Vec<u8> = (0..5000u32)
            .map(|i| u8::try_from(i * 7 % 251).unwrap())
            .collect();
        let body = sealed(&payload);
        for step in [1, 7, 31, 32, 33, 64, 4096, body.len()] {
            let (out, verdict) = unseal_in(&body, step);
            assert_eq!(out, payload, "step {step}");
            let (bytes, sha) = verdict.unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(bytes, 5000);
            assert_eq!(sha, hex(&Sha256::digest(&payload)));
        }
        // An empty volume's archive is still a body of one digest.
        assert_eq!(unseal_in(&sealed(b""), 5).1.unwrap().0, 0);
    }

    #[test]
    fn a_changed_byte_or_a_short_body_is_refused() {
        let mut body = sealed(b"hello volume");
        body[3] ^= 1;
        let e = unseal_in(&body, 4).1.unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
        let body = sealed(b"hello volume");
        let e = unseal_in(&body[..body.len() - 1], 4).1.unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
        let e = unseal_in(&body[..10], 4).1.unwrap_err();
        assert!(e.contains("shorter"), "{e}");
    }
}
