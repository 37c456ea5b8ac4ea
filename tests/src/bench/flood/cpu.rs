//! CPU time: of the calling thread or a task, exact to the nanosecond (the scheduler's own
//! clocks), and by
//! kind (softirq, steal, ...) for one CPU or the machine from `/proc/stat`, where the kernel
//! files each timer tick under what the CPU was doing then. Also pinning a thread to a CPU.

use std::{io, time::Duration};

/// The calling thread's CPU time so far.
pub fn this_thread() -> io::Result<Duration> {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The CPU time so far of task `pid`: a kernel thread is a process of its own, so this is that
/// one thread's. Exact, unlike `/proc/<pid>/stat`, which counts whole ticks.
pub fn task(pid: u32) -> io::Result<Duration> {
    let mut clock_id: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t through the valid pointer.
    let err = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock_id) };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    clock(clock_id)
}

/// The pid of `ksoftirqd/<cpu>`, which runs the softirq work a CPU could not finish on the
/// spot.
pub fn ksoftirqd(cpu: usize) -> io::Result<u32> {
    let name = format!("ksoftirqd/{cpu}");
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        {
            return Ok(pid);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no {name} thread"),
    ))
}

fn clock(id: libc::clockid_t) -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// CPU time by kind from a line of `/proc/stat`: the whole machine's (`cpu`) or one CPU's
/// (`cpu0`), in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// user, nice, system, irq and softirq: what ran on this VM.
    pub busy: u64,
    /// Of which softirq: where the receive path runs when it runs on the sender's CPU.
    pub softirq: u64,
    /// Time the hypervisor gave this VM's CPUs to someone else.
    pub steal: u64,
    /// idle and iowait.
    pub idle: u64,
}

impl Stat {
    /// The line of `which`: `cpu` for the machine, `cpu<N>` for CPU N.
    pub fn read(which: &str) -> io::Result<Stat> {
        let text = std::fs::read_to_string("/proc/stat")?;
        parse_proc_stat(&text, which).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no `{which}` line in /proc/stat"),
            )
        })
    }

    /// What changed from `self` to `later`, as CPU time.
    pub fn since(&self, later: &Stat) -> Times {
        let d = |a: u64, b: u64| ticks(b.saturating_sub(a));
        Times {
            busy: d(self.busy, later.busy),
            softirq: d(self.softirq, later.softirq),
            steal: d(self.steal, later.steal),
        }
    }
}

/// CPU time spent over an interval, by kind (see [`Stat`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    pub busy: Duration,
    pub softirq: Duration,
    pub steal: Duration,
}

/// `/proc/stat` counts in clock ticks (`USER_HZ`), though the kernel keeps nanoseconds inside.
fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(n * 1_000_000_000 / hz)
}

/// Reads line `which`: `<which> user nice system idle iowait irq softirq steal guest guest_nice`
/// (guest time is already part of user time).
fn parse_proc_stat(text: &str, which: &str) -> Option<Stat> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(which))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(Stat {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        softirq: at(6),
        steal: at(7),
        idle: at(3) + at(4),
    })
}

/// Pins the calling thread to `cpu`.
pub fn pin_this_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; the set and its size are passed together.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_read_by_kind() {
        let text = "cpu  822362 1793 157449 748047 11392 10 2415 7070 0 0\n\
                    cpu0 411181 896 78724 374023 5696 5 1207 3535 0 0\n\
                    cpu1 411181 897 78725 374024 5696 5 1208 3535 0 0\n\
                    intr 1 2 3\n";
        let m = parse_proc_stat(text, "cpu").unwrap();
        assert_eq!(m.busy, 822_362 + 1793 + 157_449 + 10 + 2415);
        assert_eq!(m.softirq, 2415);
        assert_eq!(m.steal, 7070);
        assert_eq!(m.idle, 748_047 + 11_392);
        let c1 = parse_proc_stat(text, "cpu1").unwrap();
        assert_eq!((c1.softirq, c1.idle), (1208, 374_024 + 5696));
        assert_eq!(parse_proc_stat(text, "cpu2"), None);
        // Old kernels print fewer columns.
        let m = parse_proc_stat("cpu 1 2 3 4\n", "cpu").unwrap();
        assert_eq!((m.busy, m.softirq, m.steal, m.idle), (6, 0, 0, 4));
        assert_eq!(parse_proc_stat("cpu 1 x 3 4\n", "cpu"), None);
        let later = Stat {
            softirq: m.softirq + 100,
            ..m
        };
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(
            m.since(&later).softirq,
            Duration::from_nanos(100 * 1_000_000_000 / hz)
        );
    }

    #[test]
    fn the_clocks_move_with_work() {
        let before = this_thread().unwrap();
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(this_thread().unwrap() > before);
        assert!(task(ksoftirqd(0).unwrap()).is_ok());
        let m = Stat::read("cpu0").unwrap();
        assert!(m.busy + m.idle > 0);
    }
}
