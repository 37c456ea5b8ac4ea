//! The flood's two ends: a sender that pushes minimum-size UDP datagrams as fast as one thread
//! can, 64 to a `sendmmsg` call, and a receiver that counts what reaches its socket.
//!
//! pktgen would be cheaper per packet but is not built into every kernel (not this one); a
//! socket sender is what an attacker's bots use anyway.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::cpu;

/// UDP payload bytes: 14 + 20 + 8 + 18 = 60, the smallest Ethernet frame.
pub const PAYLOAD: usize = 18;
/// Datagrams a system call.
const BATCH: usize = 64;
/// How long the receiver blocks before it looks whether it should stop.
const POLL: Duration = Duration::from_millis(20);
/// The receiver's buffer: big enough that a scheduling hiccup of the receiving thread does
/// not show as loss.
const RCVBUF: libc::c_int = 64 << 20;

/// A UDP socket bound to `from` and connected to `to`, so that every send skips the route and
/// address lookups. Create it inside the sender's namespace; it stays there.
pub fn sender(from: SocketAddr, to: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(from)?;
    socket.connect(to)?;
    Ok(socket)
}

/// What a flood sent.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Datagrams the kernel accepted.
    pub packets: u64,
    /// From the first call to the last one's return.
    pub elapsed: Duration,
    /// The sending thread's CPU time.
    pub cpu: Duration,
}

/// Sends for `duration`, from the calling thread.
pub fn flood(socket: &UdpSocket, duration: Duration) -> io::Result<Sent> {
    let payload = [0x5au8; PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: PAYLOAD,
    };
    // Every message sends the same bytes; the kernel only reads them.
    let mut messages: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            // SAFETY: a zeroed mmsghdr is a valid empty message.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let cpu_before = cpu::this_thread()?;
    let started = Instant::now();
    let mut packets = 0u64;
    loop {
        // SAFETY: `messages` holds BATCH valid headers whose iovec and payload outlive the
        // call; the socket is open.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                BATCH as libc::c_uint,
                0,
            )
        };
        if n >= 0 {
            packets += n as u64;
        } else {
            let e = io::Error::last_os_error();
            // A full device queue, or a port-unreachable answer to an earlier datagram: the
            // flood goes on.
            if !matches!(
                e.raw_os_error(),
                Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED)
            ) {
                return Err(e);
            }
        }
        if started.elapsed() >= duration {
            break;
        }
    }
    Ok(Sent {
        packets,
        elapsed: started.elapsed(),
        cpu: cpu::this_thread()? - cpu_before,
    })
}

/// A UDP socket bound to `at` with a large receive buffer. Create it inside the receiver's
/// namespace.
pub fn receiver(at: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(at)?;
    socket.set_read_timeout(Some(POLL))?;
    // SAFETY: setsockopt reads one c_int through the valid pointer. SO_RCVBUFFORCE (root)
    // passes over net.core.rmem_max.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&RCVBUF as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// What a receiver counted.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub packets: u64,
    /// The receiving thread's CPU time.
    pub cpu: Duration,
}

/// Counts datagrams from the calling thread until `stop` is set and the socket is drained.
pub fn count(socket: &UdpSocket, stop: &AtomicBool) -> io::Result<Received> {
    let mut buffers = vec![[0u8; 64]; BATCH];
    let mut iovs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: a zeroed mmsghdr is a valid empty message.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let cpu_before = cpu::this_thread()?;
    let mut packets = 0u64;
    loop {
        // SAFETY: `messages` holds BATCH headers whose iovecs point into `buffers`, all of
        // which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            packets += n as u64;
            continue;
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
            return Err(e);
        }
        // Nothing came for a while: done if asked to stop.
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(Received {
        packets,
        cpu: cpu::this_thread()? - cpu_before,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[test]
    fn what_is_flooded_over_loopback_is_counted() {
        let rx = receiver("127.0.0.1:0".parse().unwrap()).unwrap();
        let tx = sender("127.0.0.1:0".parse().unwrap(), rx.local_addr().unwrap()).unwrap();
        let stop = AtomicBool::new(false);
        let (sent, received) = std::thread::scope(|s| {
            let counting = s.spawn(|| count(&rx, &stop));
            let sent = flood(&tx, Duration::from_millis(20)).unwrap();
            stop.store(true, Ordering::Relaxed);
            (sent, counting.join().unwrap().unwrap())
        });
        assert!(sent.packets >= BATCH as u64, "{sent:?}");
        assert!(sent.cpu > Duration::ZERO);
        // The 64 MiB buffer holds what 20 ms of one thread can send over loopback.
        assert_eq!(received.packets, sent.packets, "{sent:?} {received:?}");
    }
}
