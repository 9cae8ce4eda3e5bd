//! The fuzz targets of `fuzz/` without libFuzzer (cargo-fuzz needs a
//! nightly compiler): each target gets its seed corpus, then random
//! mutations of it (bit flips, byte changes, cuts, splices, repeats) for a
//! bounded time: `STACKD_FUZZ_SECONDS` per target (default 2; `scripts/fuzz`
//! sets 60). Any panic fails the test and prints the input.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        // Below n, so it fits.
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(8) {
        let len = d.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                const SPECIAL: &[u8] = b"\"'[]{}=.,:\n\\%0x\xff#-+ ";
                let i = rng.below(len);
                d[i] = SPECIAL[rng.below(SPECIAL.len())];
            }
            2 if len > 0 => d.truncate(rng.below(len)),
            3 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let at = rng.below(len + 1);
                let piece: Vec<u8> = other[from..].iter().take(rng.below(64)).copied().collect();
                d.splice(at..at, piece);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let piece: Vec<u8> = d[from..].iter().take(rng.below(32)).copied().collect();
                for _ in 0..rng.below(16) {
                    d.extend_from_slice(&piece);
                }
            }
            _ => d.push(rng.next().to_le_bytes()[0]),
        }
    }
    d
}

/// Runs `target` on the corpus, then on mutations until the time is up;
/// returns how many inputs it ran.
fn run(name: &str, corpus: Vec<Vec<u8>>, target: fn(&[u8])) -> usize {
    let secs: u64 = std::env::var("STACKD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let mut n = 0;
    for input in &corpus {
        check(name, input, target);
        n += 1;
    }
    while Instant::now() < until {
        let input = mutate(&mut rng, &corpus);
        check(name, &input, target);
        n += 1;
    }
    eprintln!("fuzz {name}: {n} inputs in {secs} s, no panic");
    n
}

fn check(name: &str, input: &[u8], target: fn(&[u8])) {
    if std::panic::catch_unwind(|| target(input)).is_err() {
        panic!(
            "fuzz {name} panicked on input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

fn repo_file(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).expect(rel)
}

#[test]
fn config_parser_never_panics() {
    let corpus = vec![
        repo_file("examples/stackd.toml"),
        repo_file("packaging/stackd.toml"),
        br#"host = "a"
[hosts.a]
peer = "https://127.0.0.1:7780"
[peer]
tls_pin_sha256 = "ab:cd"
timeout = "2s"
heartbeat = "500ms"
[services.web]
host = ["a", "b"]
depends_on = ["db"]
health = { http = "http://127.0.0.1/", interval = "10s", retries = 3 }
restart = { on_failure = true, max_restarts = 5, window = "10m", backoff = "5s..5m" }
resources = { cpu_percent = 90, sustain = "30s" }
[notify.webhook.ops]
url = "https://hooks.example/x"
format = "slack"
"#
        .to_vec(),
    ];
    assert!(run("config", corpus, stackd::fuzz::config) > 3);
}

#[test]
fn peer_request_decoding_never_panics() {
    let corpus: Vec<Vec<u8>> = [
        "GET /v1/services",
        "GET /v1/services/web%2Dx",
        "POST /v1/services/web/start\n{\"caller\": \"stackctl@a\"}",
        "POST /v1/services/web/stop\n{\"bogus\": 1}",
        "GET /v1/tasks?service=a%20b&state=running&limit=5",
        "GET /v1/tasks/18446744073709551615",
        "GET /v1/events?after=3&timeout=30",
        "PUT /v1/config?check=true\nhost = \"a\"",
        "DELETE /v1/services/x",
        "GET /v1/tasks?x=%zz&%",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    assert!(run("peer_request", corpus, stackd::fuzz::peer_request) > 10);
}
