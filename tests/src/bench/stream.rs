//! A steady UDP stream from one client address of a [`Site`] to its server namespace, one
//! packet a period, received with the kernel's receive timestamps (`SO_TIMESTAMPNS`, the wall
//! clock): when a ban takes effect, the stream stops arriving; when it is lifted, it arrives
//! again, and the timestamps say when to within a period.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::site::Site;

/// Nanoseconds since the epoch, as the kernel stamps packets.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as i64
}

pub struct Stream {
    pub period: Duration,
    stop: Arc<AtomicBool>,
    /// Kernel receive times of the packets so far, in order.
    received: Arc<Mutex<Vec<i64>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Stream {
    /// Starts sending from `from` (an address of the site's client) every `period`.
    pub fn start(site: &Site, from: IpAddr, period: Duration) -> io::Result<Stream> {
        let server: IpAddr = if from.is_ipv4() {
            site.topology.server_v4().into()
        } else {
            site.topology.server_v6().into()
        };
        let receiver = site
            .topology
            .server()
            .run(|| UdpSocket::bind(SocketAddr::new(server, 0)))?;
        enable_timestamps(&receiver)?;
        receiver.set_read_timeout(Some(Duration::from_millis(20)))?;
        let to = receiver.local_addr()?;
        let sender = site
            .topology
            .client()
            .run(|| UdpSocket::bind(SocketAddr::new(from, 0)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let sending = {
            let stop = stop.clone();
            thread::spawn(move || {
                let started = Instant::now();
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = sender.send_to(&n.to_le_bytes(), to);
                    n += 1;
                    let next = started + period * n as u32;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
            })
        };
        let receiving = {
            let (stop, received) = (stop.clone(), received.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(at) = receive_stamped(&receiver) {
                        received.lock().expect("lock").push(at);
                    }
                }
            })
        };
        Ok(Stream {
            period,
            stop,
            received,
            threads: vec![sending, receiving],
        })
    }

    /// The receive time of the last packet that arrived, if any.
    pub fn last(&self) -> Option<i64> {
        self.received.lock().expect("lock").last().copied()
    }

    /// After a ban made at `since`: waits until nothing has arrived for `quiet`, and returns
    /// how long after `since` the stream stopped (the last arrival plus a period, or `since`'s
    /// own period if nothing arrived after it); `None` if it still arrives after `within`.
    pub fn stopped_after(&self, since: i64, quiet: Duration, within: Duration) -> Option<Duration> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.last().unwrap_or(0);
            let silent = Duration::from_nanos(now_ns().saturating_sub(last).max(0) as u64);
            if silent >= quiet {
                let stopped = last.max(since) + self.period.as_nanos() as i64;
                return Some(Duration::from_nanos((stopped - since).max(0) as u64));
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// After a ban was lifted at `since`: waits for the first packet that arrives after it and
    /// returns how long after `since` it arrived; `None` if none arrives within `within`.
    pub fn resumed_after(&self, since: i64, within: Duration) -> Option<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(first) = self
                .received
                .lock()
                .expect("lock")
                .iter()
                .rev()
                .take_while(|t| **t > since)
                .last()
            {
                return Some(Duration::from_nanos((first - since) as u64));
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn enable_timestamps(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram's kernel receive time, or `None` on a timeout.
fn receive_stamped(socket: &UdpSocket) -> Option<i64> {
    let mut data = [0u8; 64];
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr is valid; the buffers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return None;
    }
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    None
}
