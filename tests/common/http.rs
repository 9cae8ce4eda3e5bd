//! A real HTTP/1.1 listener for webhook tests: records every request and
//! answers with the statuses it is given. Included with
//! `#[path = "common/http.rs"] mod http;` by tests/notify.rs and
//! tests/docker_down.rs.

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
