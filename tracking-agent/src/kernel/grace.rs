//! Waiting until no program run that began earlier is still going: a grace period, and the
//! writer's list of what it freed but may not reuse before one has passed.
//!
//! An XDP program runs inside an RCU read-side critical section (in the driver's NAPI poll, or
//! under `BPF_PROG_TEST_RUN`), so `synchronize_rcu()` in the kernel returns only once every run
//! that was going when it was called has ended. User space has no direct call for it, but the
//! kernel makes one on its behalf after every update of a map-in-map, precisely so that the
//! caller knows no program still uses the old inner map (`maybe_wait_bpf_programs` in
//! `kernel/bpf/syscall.c`). [`Grace::wait`] updates a one-element `ARRAY_OF_MAPS` that no
//! program uses, for that wait alone. It takes a few milliseconds, so the writer asks a thread
//! of its own ([`Reclaim`]) for it and collects what it freed at its next batch.

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The part of `union bpf_attr` that `BPF_MAP_CREATE` reads.
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// The part of `union bpf_attr` that `BPF_MAP_UPDATE_ELEM` reads.
#[repr(C)]
struct UpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Two tiny maps whose only use is to make the kernel wait for a grace period.
pub struct Grace {
    outer: OwnedFd,
    inner: OwnedFd,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised prefix of `union bpf_attr` for `cmd`, and the
    // kernel reads no more than the size given.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn create(attr: &mut CreateAttr) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_MAP_CREATE, attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Grace {
    pub fn new() -> io::Result<Grace> {
        let inner = create(&mut CreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..CreateAttr::default()
        })?;
        let outer = create(&mut CreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.as_raw_fd() as u32,
            ..CreateAttr::default()
        })?;
        Ok(Grace { outer, inner })
    }

    /// Returns once every program run that had begun when it was called has ended.
    pub fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &mut UpdateAttr {
                map_fd: self.outer.as_raw_fd() as u32,
                _pad: 0,
                key: &key as *const u32 as u64,
                value: &value as *const u32 as u64,
                flags: 0,
            },
        )
        .map(drop)
    }
}

/// Something the writer freed that a running program may still be reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retired {
    /// A slot of `SLOTS`: a run may hold its index from an entry it read before the removal.
    Slot(u32),
    /// An IPv6 ban entry, by the index of its tag word: a run may be comparing its address.
    Ban6(usize),
    /// An IPv6 allowlist entry, likewise.
    Allow6(usize),
}

/// What was freed, held until a grace period that began after it ended.
pub struct Reclaim {
    grace: Arc<Grace>,
    /// Freed by the batch being applied.
    current: Vec<Retired>,
    /// Earlier batches' frees, each with the ticket of the grace period asked for after it.
    waiting: VecDeque<(u64, Vec<Retired>)>,
    next_ticket: u64,
    /// Tickets for the thread; dropped first, which ends it.
    requests: Option<mpsc::Sender<u64>>,
    /// The latest ticket whose grace period has ended.
    done: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaim {
    pub fn new() -> io::Result<Reclaim> {
        let grace = Arc::new(Grace::new()?);
        let done = Arc::new(AtomicU64::new(0));
        let (requests, tickets) = mpsc::channel::<u64>();
        let thread = std::thread::Builder::new()
            .name("tracking-grace".into())
            .spawn({
                let grace = grace.clone();
                let done = done.clone();
                move || {
                    while let Ok(mut ticket) = tickets.recv() {
                        // One grace period serves every ticket asked for before it starts.
                        while let Ok(later) = tickets.try_recv() {
                            ticket = later;
                        }
                        match grace.wait() {
                            Ok(()) => done.store(ticket, Ordering::Release),
                            Err(e) => tracing::error!("waiting for a grace period failed: {e}"),
                        }
                    }
                }
            })?;
        Ok(Reclaim {
            grace,
            current: Vec::new(),
            waiting: VecDeque::new(),
            next_ticket: 1,
            requests: Some(requests),
            done,
            thread: Some(thread),
        })
    }

    /// Notes what the batch being applied freed.
    pub fn retire(&mut self, item: Retired) {
        self.current.push(item);
    }

    /// Ends a batch: what it freed waits for a grace period, which the thread starts now.
    pub fn end_batch(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting
            .push_back((ticket, std::mem::take(&mut self.current)));
        if let Some(requests) = &self.requests
            && requests.send(ticket).is_err()
        {
            tracing::error!("the grace period thread has stopped");
        }
    }

    /// What has become safe to reuse since the last call, without waiting.
    pub fn collect(&mut self) -> Vec<Retired> {
        let done = self.done.load(Ordering::Acquire);
        let mut out = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|(ticket, _)| *ticket <= done)
        {
            out.extend(self.waiting.pop_front().expect("checked").1);
        }
        out
    }

    /// Waits for a grace period and returns everything freed until now, the current batch's
    /// frees included. For the rare batch that needs what it, or the one before, just freed.
    pub fn wait_all(&mut self) -> io::Result<Vec<Retired>> {
        self.grace.wait()?;
        let mut out: Vec<Retired> = self
            .waiting
            .drain(..)
            .flat_map(|(_, items)| items)
            .collect();
        out.append(&mut self.current);
        Ok(out)
    }

    /// Whether anything freed is still waiting (or was freed in this batch).
    pub fn pending(&self) -> bool {
        !self.current.is_empty() || !self.waiting.is_empty()
    }

    /// Waits for a grace period now, for state found at start-up that an earlier agent retired.
    pub fn wait_now(&self) -> io::Result<()> {
        self.grace.wait()
    }
}

impl Drop for Reclaim {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the grace period thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn what_a_batch_frees_comes_back_after_a_grace_period() {
        assert!(
            is_root(),
            "creating BPF maps needs root; run `cargo xtask test`"
        );
        let mut reclaim = Reclaim::new().unwrap();
        reclaim.retire(Retired::Slot(7));
        reclaim.retire(Retired::Ban6(3));
        assert!(reclaim.collect().is_empty(), "not before the batch ends");
        reclaim.end_batch();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut back = Vec::new();
        while back.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
            back = reclaim.collect();
        }
        assert_eq!(back, [Retired::Slot(7), Retired::Ban6(3)]);
        assert!(!reclaim.pending());

        reclaim.retire(Retired::Allow6(1));
        assert_eq!(reclaim.wait_all().unwrap(), [Retired::Allow6(1)]);
    }
}
