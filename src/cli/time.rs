//! Timestamps as systemctl prints them, without a time-zone database:
//! "Wed 2026-11-25 17:02:03 UTC" and "5min 3s ago" (the span from
//! `fmt::span`).

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

pub(super) use crate::fmt::span;

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
    }
}
