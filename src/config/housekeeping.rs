//! `[housekeeping]`: when `prune` runs by itself, and below which free
//! share of a disk stackd warns.
//!
//! ```toml
//! [housekeeping]
//! prune = "weekly"        # "off" (default), "daily", "weekly" or a duration ("36h")
//! disk_warning = "10%"    # "off" (default), a percentage or a fraction (0.1)
//! ```

use std::time::Duration;

use super::raw::{At, RawHousekeeping, StrOrNum};
use super::units::parse_duration;

/// The validated `[housekeeping]` table. The default does nothing: no
/// scheduled prune, no disk warning.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HousekeepingConfig {
    /// How often a scheduled prune (all kinds) runs; `None` is "off".
    pub prune: Option<Duration>,
    /// Warn when the free share of Docker's data root or the state
    /// directory falls below this fraction (0 < f < 1); `None` is "off".
    pub disk_warning: Option<f64>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The shortest schedule accepted: a prune lists every image and
/// container, which is not something to do every few milliseconds.
const MIN_PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// Validates the raw table; errors are returned with where they were
/// written, for the caller's `file:line:col`.
pub(super) fn build(raw: Option<&RawHousekeeping>) -> (HousekeepingConfig, Vec<(At, String)>) {
    let mut out = HousekeepingConfig::default();
    let mut errors = Vec::new();
    let Some(raw) = raw else {
        return (out, errors);
    };
    if let Some(l) = &raw.prune {
        match prune_interval(&l.value) {
            Ok(d) => out.prune = d,
            Err(e) => errors.push((l.at, e)),
        }
    }
    if let Some(l) = &raw.disk_warning {
        match disk_share(&l.value) {
            Ok(f) => out.disk_warning = f,
            Err(e) => errors.push((l.at, e)),
        }
    }
    (out, errors)
}

fn prune_interval(s: &str) -> Result<Option<Duration>, String> {
    let expected = "expected \"off\", \"daily\", \"weekly\" or a duration such as \"36h\"";
    match s.trim() {
        "off" => Ok(None),
        "daily" => Ok(Some(DAY)),
        "weekly" => Ok(Some(7 * DAY)),
        other => match parse_duration(other) {
            Ok(d) if d >= MIN_PRUNE_INTERVAL => Ok(Some(d)),
            Ok(_) => Err(format!("a prune interval must be at least 1s; {expected}")),
            Err(_) => Err(format!("invalid prune schedule {s:?}: {expected}")),
        },
    }
}

fn disk_share(v: &StrOrNum) -> Result<Option<f64>, String> {
    let expected =
        "expected \"off\", a percentage (\"10%\") or a fraction above 0 and below 1 (0.1)";
    if matches!(v, StrOrNum::Str(s) if s.trim() == "off") {
        return Ok(None);
    }
    match v.fraction() {
        Some(f) if f > 0.0 && f < 1.0 => Ok(Some(f)),
        _ => Err(expected.to_string()),
    }
}
