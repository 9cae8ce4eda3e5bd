//! Small value parsers: durations, byte sizes, status ranges, positions, hash.

use std::time::Duration;

/// Parses `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"2d"` and sums such as
/// `"1m30s"`. A bare `"0"` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!(
            "invalid duration {s:?}: {why}; expected a number followed by ms, s, m, h or d, \
             e.g. \"500ms\", \"10s\", \"1m30s\""
        )
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u64 = 0; // milliseconds
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("missing number"));
        }
        let (num, tail) = rest.split_at(digits);
        let n: u64 = num.parse().map_err(|_| bad("number too large"))?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let millis_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        total = n
            .checked_mul(millis_per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("too large"))?;
        rest = tail;
    }
    Ok(Duration::from_millis(total))
}

/// Parses a byte size: `"512M"`, `"2G"`, `"512MiB"`, `"1024"`, `"64k"`.
/// Units are powers of 1024 whatever their spelling, as Docker reads them.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "invalid size {s:?}: {why}; expected a number of bytes, optionally followed by \
             K, M, G or T (powers of 1024), e.g. \"512M\", \"2G\", \"512MiB\""
        )
    };
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad("missing number"));
    }
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad("number too large"))?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad("unknown unit")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| bad("too large"))
}

/// Parses `"200-399"`, `"200"` or `"200,204,300-399"` into inclusive ranges.
pub(crate) fn parse_status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = || {
        format!(
            "invalid status {s:?}: expected HTTP status codes (100-599) or ranges, \
             e.g. \"200-399\" or \"200,204\""
        )
    };
    let code = |c: &str| -> Result<u16, String> {
        let v: u16 = c.trim().parse().map_err(|_| bad())?;
        if (100..=599).contains(&v) {
            Ok(v)
        } else {
            Err(bad())
        }
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(bad());
        }
        out.push((lo, hi));
    }
    Ok(out)
}

/// Checks `host:port` (an IPv6 host in brackets).
pub(crate) fn check_host_port(s: &str) -> Result<(), String> {
    let ok = match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid address {s:?}: expected host:port, e.g. \"127.0.0.1:8080\""
        ))
    }
}

/// 1-based line and column (in characters) of a byte offset in `text`.
/// Offsets past the end or inside a character are clamped, never a panic.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// FNV-1a, 64 bit.
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(super) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub(super) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub(super) fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}
