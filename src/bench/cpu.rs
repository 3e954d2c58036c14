//! The bench's own CPU time, so a report can show that the load generator
//! was not the bottleneck (it shares the machine with what it measures).

use std::time::{Duration, Instant};

/// Clock ticks per second in /proc's CPU times: the kernel's USER_HZ, which
/// is 100 on every Linux architecture Conveyor builds for.
const USER_HZ: f64 = 100.0;

/// This process's CPU time (user + system, all threads) and the wall clock
/// at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuMark {
    cpu: Option<Duration>,
    at: Instant,
}

impl CpuMark {
    pub fn now() -> Self {
        let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| cpu_of_stat(&stat));
        Self { cpu, at: Instant::now() }
    }

    /// CPU seconds used since `self`, and that as a percentage of one core
    /// over the wall time; `None` where /proc is not there.
    pub fn since(&self) -> Option<(f64, f64)> {
        let now = Self::now();
        let used = now.cpu?.checked_sub(self.cpu?)?.as_secs_f64();
        let wall = now.at.duration_since(self.at).as_secs_f64();
        Some((used, if wall > 0.0 { 100.0 * used / wall } else { 0.0 }))
    }
}

/// utime + stime from a /proc/<pid>/stat line. The command name (field 2)
/// is in parentheses and may hold spaces, so fields count from its `)`.
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name_even_with_spaces_in_it() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194304 500 0 0 0 250 50 0 0 20 0 3 0 100";
        assert_eq!(cpu_of_stat(stat), Some(Duration::from_secs(3)));
        assert_eq!(cpu_of_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let mark = CpuMark::now();
        assert!(mark.since().is_some_and(|(used, _)| used >= 0.0));
    }
}
