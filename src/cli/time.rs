//! Timestamps as systemctl prints them, without a time-zone database:
//! "Wed 2026-11-25 17:02:03 UTC" and "5min 3s ago".

pub(super) use crate::time::now_usec;

pub(super) fn timestamp(usec: u64) -> String {
    if usec == 0 {
        return "n/a".to_string();
    }
    let t = crate::time::utc(usec);
    format!(
        "{} {:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.weekday, t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// "2h 5min", "3s", "350ms".
pub(super) fn span(usec: u64) -> String {
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

pub(super) fn ago(usec: u64) -> String {
    if usec == 0 {
        return String::new();
    }
    format!("{} ago", span(now_usec().saturating_sub(usec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_systemctl() {
        assert_eq!(timestamp(0), "n/a");
        assert_eq!(timestamp(1_000_000), "Thu 1970-01-01 00:00:01 UTC");
        // 2026-11-25 16:56:33 UTC is a Wednesday.
        assert_eq!(
            timestamp(1_795_625_793_000_000),
            "Wed 2026-11-25 16:56:33 UTC"
        );
        assert_eq!(span(350_000), "350ms");
        assert_eq!(span(3_000_000), "3s");
        assert_eq!(span(7_503_000_000), "2h 5min");
    }
}
