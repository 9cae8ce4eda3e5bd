//! Wall-clock time without a time-zone database: microseconds since the
//! epoch, RFC 3339 both ways and the civil-date arithmetic under them
//! (Howard Hinnant's algorithms). Every timestamp stackd prints or parses
//! goes through here; everything is UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock, microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A UTC instant in its calendar parts, whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    /// "Mon" … "Sun".
    pub weekday: &'static str,
}

/// Microseconds since the epoch in calendar parts (UTC).
pub fn utc(usec: u64) -> Utc {
    let secs = i64::try_from(usec / 1_000_000).unwrap_or(i64::MAX);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil(days);
    // 1970-01-01 was a Thursday.
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    Utc {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        weekday: WEEKDAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)],
    }
}

/// Microseconds since the epoch as RFC 3339 UTC, whole seconds:
/// "2026-11-25T17:02:03Z".
pub fn rfc3339(usec: u64) -> String {
    let t = utc(usec);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Parses Docker's RFC 3339 timestamps ("2024-05-01T10:20:30.123456789Z",
/// offsets allowed) into microseconds since the epoch. Docker's zero time
/// ("0001-01-01T00:00:00Z") and anything before 1970 give None.
pub fn parse_rfc3339_usec(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let mut scaled = 0i64;
        for (i, c) in frac.bytes().take(6).enumerate() {
            if i < digits {
                scaled = scaled * 10 + i64::from(c - b'0');
            }
        }
        for _ in digits.min(6)..6 {
            scaled *= 10;
        }
        micros = scaled;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let t = &rest[1..];
            if t.len() != 5 || t.as_bytes()[2] != b':' {
                return None;
            }
            let h: i64 = t[0..2].parse().ok()?;
            let m: i64 = t[3..5].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    if secs < 0 {
        return None;
    }
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31).
#[allow(
    clippy::cast_possible_truncation,
    reason = "day and month are in 1..=31 and 1..=12 by construction"
)]
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both in range by construction: 1..=31 and 1..=12.
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_and_days_from_civil_are_inverse() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (1_700_000_000_123_456, "2023-11-14T22:13:20Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00Z"),
            (4_102_444_799_000_000, "2099-12-31T23:59:59Z"),
        ];
        for (usec, want) in cases {
            assert_eq!(rfc3339(usec), want);
            assert_eq!(parse_rfc3339_usec(want), Some(usec / 1_000_000 * 1_000_000));
        }
    }

    #[test]
    fn weekdays_and_parts() {
        let t = utc(1_795_625_793_000_000);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
            (2026, 11, 25, 16, 56, 33, "Wed")
        );
        assert_eq!(utc(0).weekday, "Thu");
    }

    #[test]
    fn parses_the_engine_s_timestamps() {
        assert_eq!(parse_rfc3339_usec("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_usec("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_usec("2024-02-29T12:34:56.123456789Z"),
            Some(1_709_210_096_123_456)
        );
        assert_eq!(
            parse_rfc3339_usec("2024-02-29T13:34:56.5+01:00"),
            Some(1_709_210_096_500_000)
        );
        assert_eq!(parse_rfc3339_usec("2024-02-29"), None);
        assert_eq!(parse_rfc3339_usec("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_usec("2024-01-01T00:00:00."), None);
    }
}
