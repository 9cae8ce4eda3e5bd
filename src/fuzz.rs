//! One input of each fuzz target, shared by the cargo-fuzz targets in
//! `fuzz/` and the libFuzzer-free run in `tests/fuzz.rs`. Each must return,
//! whatever the bytes; a panic is the bug they look for.

use std::path::Path;

use crate::config::{self, LoadOptions};
use crate::peer::server::decode_request;

/// The bytes as a cluster file (UTF-8 only: the daemon reads text), as
/// host `a`, without looking for compose files.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let opts = LoadOptions {
            user_mode: false,
            host_override: Some("a".into()),
        };
        let _ = config::parse_str(text, Path::new("fuzz.toml"), &opts, false);
    }
}

/// The bytes as `METHOD TARGET\nBODY`.
pub fn peer_request(data: &[u8]) {
    let (line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let line = String::from_utf8_lossy(line);
    let (method, target) = line.split_once(' ').unwrap_or((&line, "/"));
    let _ = decode_request(method, target, body);
}
