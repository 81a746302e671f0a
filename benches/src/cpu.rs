//! The load generator's own CPU time, from `/proc/self/stat`, so a report can show that the
//! bench is not what limits the figures it prints.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: u64 = 100;

/// User plus system time in the `/proc/<pid>/stat` line `text` (fields 14 and 15).
pub fn parse_stat(text: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_S))
}

/// This process's CPU time so far (every thread), where `/proc` exists.
pub fn own() -> Option<Duration> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Cores this machine offers the process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time() {
        let line = "4242 (shardline bench) S 1 2 3 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(line), Some(Duration::from_millis(3800)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_used_some_time() {
        let spin: u64 = (0..5_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(own().is_some());
    }
}
