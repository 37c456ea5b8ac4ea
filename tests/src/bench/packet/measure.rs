//! Timing programs through `BPF_PROG_TEST_RUN`, two ways.
//!
//! - **Hot**: one frame, run `repeat` times in one call, as the kernel's own benchmarks do; every
//!   lookup after the first hits the caches. The cost a packet is the calling thread's CPU time
//!   over the call divided by `repeat`: the kernel's own mean is whole nanoseconds, too coarse for
//!   costs a few nanoseconds beyond the floor, while the thread's clock is exact and the call's
//!   fixed overhead (a microsecond or two) vanishes over millions of runs.
//! - **Cold**: many frames, each run once in a call of its own, so that consecutive lookups go to
//!   different sources and table lines, as in a flood from many sources. (One call repeats one
//!   frame, live frames included: the page pool fills every page from the same data.) The cost a
//!   packet is the sum of the kernel's own durations of the single runs (exact nanoseconds of the
//!   run between two clock reads) over the frames; the floor pays for the clock reads too.

use std::{io, time::Duration};

use crate::xdp::XdpRun;

/// The calling thread's CPU time so far.
fn thread_cpu() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// `repeat` runs of `frame`: the verdict and the cost a run in ns.
pub fn hot(run: &XdpRun, frame: &[u8], repeat: u32) -> io::Result<(u32, f64)> {
    let before = thread_cpu()?;
    let (verdict, _) = run.run_repeat(frame, repeat)?;
    let spent = thread_cpu()? - before;
    Ok((verdict, spent.as_nanos() as f64 / f64::from(repeat)))
}

/// One run of each frame: how many of them got `verdict`, and the mean cost a run in ns.
pub fn cold(run: &XdpRun, frames: &[Vec<u8>], verdict: u32) -> io::Result<(usize, f64)> {
    let mut total = Duration::ZERO;
    let mut matching = 0;
    for frame in frames {
        let (v, d) = run.run_repeat(frame, 1)?;
        total += d;
        matching += usize::from(v == verdict);
    }
    Ok((
        matching,
        total.as_nanos() as f64 / frames.len().max(1) as f64,
    ))
}

/// Keeps the benchmark on one CPU: `BPF_PROG_TEST_RUN` runs on the caller's CPU, and a floor and
/// its case should share it. The process's CPUs come back when the guard drops, so that the
/// benchmarks run after this one (and the programs they start, which inherit the mask) have the
/// whole machine again.
pub fn pin_to_one_cpu() -> Pinned {
    // SAFETY: a zeroed cpu_set_t is valid; the set and its size are passed together.
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut before);
        let cpus = libc::CPU_COUNT(&before).max(1) as usize;
        let last = (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &before))
            .nth(cpus - 1)
            .unwrap_or(0);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(last, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        Pinned(before)
    }
}

/// The CPUs the process had before [`pin_to_one_cpu`].
pub struct Pinned(libc::cpu_set_t);

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: the set was filled by sched_getaffinity; the set and its size go together.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }
}
