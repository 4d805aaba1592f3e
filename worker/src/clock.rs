//! Time as the worker shows and compares it: the host's clock in milliseconds, ISO 8601 for
//! people, and when this process started.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by this host's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the epoch as an ISO 8601 UTC time.
pub(crate) fn show_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// When this process started, from `/proc` (Linux), if that was at most 10 s ago: a restart
/// requested at any moment after the process started concerns it. Give it to
/// [`crate::Worker::started_at`] when you build a worker in `main`; the commands in `cli`
/// do.
pub fn process_started() -> Option<Instant> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let age = process_age(&stat, &uptime)?;
    if age > Duration::from_secs(10) {
        return None;
    }
    Instant::now().checked_sub(age)
}

/// A process's age from its `/proc/<pid>/stat` and `/proc/uptime`, two clock ticks (USER_HZ,
/// 100 on Linux) less: both are counted in ticks, so a start read from them may seem up to
/// that much earlier than it was, and a `stop-workers` that finished just before this process
/// was started (by a supervisor, after a deploy) would then stop it.
fn process_age(stat: &str, uptime: &str) -> Option<Duration> {
    // Fields after the command name, which may hold spaces and parentheses: state is the
    // first, starttime (field 22, in ticks since boot) the twentieth.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let age = uptime - ticks as f64 / 100.0;
    if age < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64((age - 0.02).max(0.0)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(show_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(show_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(show_time(1_795_940_786_000), "2026-11-29T08:26:26Z");
    }

    #[test]
    fn a_process_age_is_read_from_proc_even_with_parentheses_in_its_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    12345 1000000 200 18446744073709551615";
        let age = process_age(stat, "200.50 390.00\n").unwrap();
        assert_eq!(age.as_millis(), 77_030); // 200.50 - 123.45 - two ticks
        assert_eq!(process_age(stat, "100.00 1.0\n"), None, "started after now");
        assert_eq!(process_age("4242 (x) S 1", "200.50 1"), None);
        let real = std::fs::read_to_string("/proc/self/stat").unwrap();
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap();
        assert!(process_age(&real, &uptime).is_some(), "{real}");
    }
}
