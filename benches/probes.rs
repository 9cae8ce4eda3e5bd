//! Figure for the probe runner: the CPU it costs to run 200 probes (100
//! http, 100 tcp) on a 10 s interval against a local listener, as a share
//! of one core over 60 s. The goal is < 1 %. The listener runs in a child
//! process (this binary again, with `--serve`), so only the probes count.
//!
//! Run it with `cargo bench --bench probes`. Without `--bench` (as
//! `cargo test --all-targets` runs it) it does nothing.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stackd::config::{HealthConfig, Probe};
use stackd::health::spawn_probes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROBES: usize = 200;
const INTERVAL: Duration = Duration::from_secs(10);
const MEASURE: Duration = Duration::from_secs(60);

/// CPU time (user + system, every thread) this process used so far, from
/// `/proc/self/stat` (fields 14 and 15, in USER_HZ ticks: 100 a second on
/// Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name (field 2) may hold spaces; count after its ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("a tick count"))
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// The listener: answers every connection with a small 200, or just
/// closes it when the client (a tcp probe) sends nothing.
async fn serve() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut seen = Vec::new();
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    return;
                }
            }
        });
    }
}

fn health(probe: Probe) -> HealthConfig {
    HealthConfig {
        probe: Some(probe),
        interval: INTERVAL,
        timeout: Duration::from_secs(5),
        retries: 3,
        start_period: Duration::ZERO,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::args().any(|a| a == "--serve") {
        rt.block_on(serve());
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("probes benchmark skipped: run it with `cargo bench --bench probes`");
        return;
    }
    let mut server = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the listener");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the listener's port");

    let services: Vec<(String, HealthConfig)> = (0..PROBES)
        .map(|i| {
            let probe = if i % 2 == 0 {
                Probe::Http {
                    url: format!("http://127.0.0.1:{port}/health"),
                    expect_status: vec![(200, 399)],
                    body_contains: Some("ok".into()),
                    tls_ca: None,
                }
            } else {
                Probe::Tcp {
                    address: format!("127.0.0.1:{port}"),
                }
            };
            (format!("svc{i}"), health(probe))
        })
        .collect();
    let (ok, failed) = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let runner = spawn_probes(services, std::path::Path::new("/"), None, tx);
        // The first round fires at once; start measuring after it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while rx.try_recv().is_ok() {}
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let (mut ok, mut failed) = (0usize, 0usize);
        let deadline = tokio::time::Instant::now() + MEASURE;
        while let Ok(Some((_, r))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if r.ok {
                ok += 1;
            } else {
                failed += 1;
                if failed == 1 {
                    eprintln!("a probe failed: {}", r.message);
                }
            }
        }
        let cpu = cpu_time() - cpu0;
        let wall = t0.elapsed();
        runner.stop().await;
        println!(
            "{PROBES} probes (100 http, 100 tcp) every {INTERVAL:?} for {:.0} s: {ok} ok, {failed} failed",
            wall.as_secs_f64()
        );
        println!(
            "CPU {:.3} s = {:.3} % of one core ({:.1} µs per probe); goal < 1 %",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 100.0 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / (ok + failed).max(1) as f64
        );
        (ok, failed)
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok > 0 && failed == 0, "{ok} ok, {failed} failed");
}
