//! A real HTTP/1.1 listener for webhook tests: records every request and
//! answers with the statuses it is given. Included with
//! `#[path = "common/http.rs"] mod http;` by tests/notify.rs and
//! tests/docker_down.rs.

// A fixture module (also included by path): see common/mod.rs.
#![allow(unreachable_pub, clippy::unwrap_used)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One HTTP request as the listener saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// A real HTTP/1.1 listener answering each request with the next status of
/// `statuses` (the last one repeats) and recording what it got.
pub async fn http_listener(statuses: Vec<u16>) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_len, len) = loop {
                let got = sock.read(&mut chunk).await.unwrap();
                assert!(got > 0, "the client closed before a whole request");
                buf.extend_from_slice(&chunk[..got]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    break (end + 4, len);
                }
            };
            while buf.len() < head_len + len {
                let got = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..got]);
            }
            let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            log.lock().unwrap().push(Seen {
                head: head.lines().next().unwrap_or("").to_string(),
                headers,
                body: buf[head_len..head_len + len].to_vec(),
            });
            let status = statuses[n.min(statuses.len() - 1)];
            n += 1;
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
            );
            let _ = sock.write_all(reply.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (port, seen)
}

/// A real HTTP/1.1 endpoint on a thread of its own (no runtime needed)
/// that answers every request with 200 and "ok", until stopped: then its
/// port refuses connections, as a remote service that went down does.
/// [`Endpoint::start_on`] brings it back on the same port.
pub struct Endpoint {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    pub fn start() -> Endpoint {
        Endpoint::start_on(0)
    }

    pub fn start_on(port: u16) -> Endpoint {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut sock, _)) => {
                        let _ = sock.set_nonblocking(false);
                        let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut chunk) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let _ = sock.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        Endpoint {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the port; returns once nothing listens on it.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}
