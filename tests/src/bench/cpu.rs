//! CPU time, from the kernel's own accounting: of one process (`/proc/<pid>/stat`), of the
//! children this process has waited for (`getrusage`), and of the whole machine
//! (`/proc/stat`), so that a benchmark can say who used the cores while it ran: the server, the
//! load generator, or the machine's other work (other builds, other VMs' steal).

use std::time::Duration;

use anyhow::Context as _;

/// Clock ticks a second of `/proc` times.
fn hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

fn ticks(n: u64) -> Duration {
    Duration::from_micros(n * 1_000_000 / hz())
}

/// User and system time of process `pid`, all its threads.
pub fn process(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    of_stat(&stat).with_context(|| format!("reading /proc/{pid}/stat"))
}

/// User and system time of process `pid` and of every live process descended from it (a
/// PostgreSQL server: the postmaster and its backends). What children that exited used is
/// not included.
pub fn tree(pid: u32) -> anyhow::Result<Duration> {
    let mut parents = std::collections::HashMap::new();
    let mut times = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let (Some(ppid), Some(t)) = (ppid, of_stat(&stat)) {
            parents.insert(p, ppid);
            times.insert(p, t);
        }
    }
    let descends = |mut p: u32| loop {
        if p == pid {
            return true;
        }
        match parents.get(&p) {
            Some(&parent) if parent != 0 && parent != p => p = parent,
            _ => return false,
        }
    };
    anyhow::ensure!(times.contains_key(&pid), "no process {pid}");
    Ok(times
        .iter()
        .filter(|(p, _)| descends(**p))
        .map(|(_, t)| *t)
        .sum())
}

/// `utime + stime` of a `/proc/<pid>/stat` line.
fn of_stat(stat: &str) -> Option<Duration> {
    // The name, in parentheses, may hold spaces; the fields after it start with the state (3).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ticks(utime + stime))
}

/// User and system time of every child this process has waited for, so far: around a
/// `Command::output()`, the difference is that command's.
pub fn children() -> Duration {
    // SAFETY: a zeroed rusage is valid, and getrusage writes only into it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The machine's CPU time so far: busy (user, nice, system, interrupts) over all cores, and
/// stolen by the hypervisor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Machine {
    pub busy: Duration,
    pub steal: Duration,
}

impl Machine {
    pub fn now() -> anyhow::Result<Machine> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        Machine::of_stat(&stat).context("no `cpu` line in /proc/stat")
    }

    fn of_stat(stat: &str) -> Option<Machine> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let n: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let busy = n.first()? + n.get(1)? + n.get(2)? + n.get(5)? + n.get(6)?;
        Some(Machine {
            busy: ticks(busy),
            steal: ticks(*n.get(7)?),
        })
    }

    /// What was used between `earlier` and now.
    pub fn since(self, earlier: Machine) -> Machine {
        Machine {
            busy: self.busy.saturating_sub(earlier.busy),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_charged_user_plus_system() {
        let stat = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(of_stat(stat), Some(ticks(300)));
    }

    #[test]
    fn the_machine_is_busy_outside_idle_iowait_and_steal() {
        let stat = "cpu  100 1 20 5000 7 3 4 9 0 0\ncpu0 50 0 10 2500 3 1 2 4 0 0\n";
        let m = Machine::of_stat(stat).unwrap();
        assert_eq!(m.busy, ticks(128));
        assert_eq!(m.steal, ticks(9));
    }
}
