//! Figure for the peer endpoint: `GET /v1/services` on loopback with 50
//! concurrent keep-alive clients for 5 s: requests per second and p99.
//! Goals: more than 5,000 req/s, p99 under 20 ms.
//!
//! `cargo bench --bench peer`. Without `--bench` (as `cargo test
//! --all-targets` runs it) it does nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Bus, Daemon, TestEnv};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

const CLIENTS: usize = 50;
const SERVICES: usize = 20;
const RUN: Duration = Duration::from_secs(5);
const TOKEN: &str = "bench-token-0123456789";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !common::have_bus() {
        return;
    }
    let env = TestEnv::new("bench_peer");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = env.dir().join("peer.token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut extra = format!(
        "[peer]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = {}\n",
        common::toml_str(&token.display().to_string())
    );
    for i in 0..SERVICES {
        let svc = env.add_project(&format!("s{i}"), "services: {}\n");
        extra.push_str(&format!("[services.{svc}]\nauto_start = false\n"));
    }
    env.write_config(&extra);
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start_with(&env, &bus, &[("RUST_LOG", "warn")], &[]);
    let addr = format!("127.0.0.1:{port}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let until = Instant::now() + RUN;
        let mut joins = Vec::new();
        for _ in 0..CLIENTS {
            let addr = addr.clone();
            joins.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let req = Request::get("/v1/services")
                        .header("host", &addr)
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let t = Instant::now();
                    let resp = send.send_request(req).await.unwrap();
                    assert!(resp.status().is_success());
                    let _ = resp.into_body().collect().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for j in joins {
            all.extend(j.await.unwrap());
        }
        all
    });
    latencies.sort();
    let n = latencies.len();
    let p = |q: f64| latencies[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "GET /v1/services ({SERVICES} services), {CLIENTS} keep-alive clients, {RUN:?}: {n} requests, {:.0} req/s, p50 {:?}, p99 {:?}, max {:?}",
        n as f64 / RUN.as_secs_f64(),
        p(0.50),
        p(0.99),
        latencies[n - 1]
    );
}
