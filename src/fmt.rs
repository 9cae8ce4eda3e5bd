//! Numbers in words, the one place they are formatted: durations as the
//! config spells them and spans as systemctl prints them, sizes in the
//! units each audience reads (binary for memory and disk space, decimal
//! where Docker prints sizes, systemd-cgtop's short form in `stackctl top`).

use std::time::Duration;

/// "10m", "90s", "2h", "1h30m": as the config's durations are written.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// "2h 5min", "3s", "350ms": a span of microseconds as systemctl prints
/// it (its two largest units).
pub fn span(usec: u64) -> String {
    let ms = usec / 1000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let units = [(86_400, "d"), (3600, "h"), (60, "min"), (1, "s")];
    let mut parts = Vec::new();
    let mut left = s;
    for (size, name) in units {
        if left >= size {
            parts.push(format!("{}{name}", left / size));
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = MIB * 1024.0;

/// "48 MiB", "1.5 GiB": memory in alerts and diagnoses.
pub fn mib(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / GIB)
    } else {
        format!("{:.0} MiB", n as f64 / MIB)
    }
}

/// "3.2 GiB": free disk space.
pub fn gib(n: u64) -> String {
    gib_f64(n as f64)
}

/// [`gib`] of a figure carried as f64 (the host's memory in `HostStats`).
pub fn gib_f64(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / GIB)
}

/// "12.3 MB", "512 B": decimal units, as Docker prints image sizes.
pub fn decimal_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// "512B", "1.5K", "48.0M", "2.1G": as systemd-cgtop shows sizes.
pub fn short_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_the_config_writes_them() {
        let cases = [
            (0, "0s"),
            (90, "1m30s"),
            (600, "10m"),
            (7200, "2h"),
            (5400, "1h30m"),
        ];
        for (secs, want) in cases {
            assert_eq!(duration(Duration::from_secs(secs)), want, "{secs}");
        }
    }

    #[test]
    fn spans_as_systemctl_prints_them() {
        assert_eq!(span(350_000), "350ms");
        assert_eq!(span(3_000_000), "3s");
        assert_eq!(span(7_503_000_000), "2h 5min");
    }

    #[test]
    fn sizes_in_each_audience_units() {
        assert_eq!(mib(48 << 20), "48 MiB");
        assert_eq!(mib(3 << 29), "1.5 GiB");
        assert_eq!(gib(5 << 29), "2.5 GiB");
        assert_eq!(gib_f64(1.5 * GIB), "1.5 GiB");
        assert_eq!(decimal_bytes(512), "512 B");
        assert_eq!(decimal_bytes(12_345_678), "12.3 MB");
        assert_eq!(short_size(512), "512B");
        assert_eq!(short_size(1536), "1.5K");
        assert_eq!(short_size(48 << 20), "48.0M");
    }
}
