//! [`EchoServer`]: TCP and UDP echo on one port, for [`crate::traffic`] to talk to. Its sockets
//! are created inside a namespace and served from plain threads; stopped on drop.

use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

/// How often the server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// TCP and UDP echo on the same port.
#[derive(Debug)]
pub struct EchoServer {
    /// The bound address, with the port chosen when asked for port 0.
    local_addr: SocketAddr,
    /// Set on drop; every thread checks it at least every [`POLL`].
    stop: Arc<AtomicBool>,
    /// The TCP acceptor and the UDP loop.
    threads: Vec<JoinHandle<()>>,
    /// One thread per TCP connection, joined on drop too.
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl EchoServer {
    /// Starts echoing on `addr` inside `netns`. Port 0 picks a port free for both TCP and UDP;
    /// `[::]` listens on IPv4 and IPv6 at once.
    pub fn start(netns: &Netns, addr: SocketAddr) -> io::Result<EchoServer> {
        let (tcp, udp) = netns.run(|| bind(addr))?;
        Ok(EchoServer::serve(tcp, udp))
    }

    /// Starts echoing on `addr` in the calling thread's namespace.
    pub fn start_here(addr: SocketAddr) -> io::Result<EchoServer> {
        let (tcp, udp) = bind(addr)?;
        Ok(EchoServer::serve(tcp, udp))
    }

    /// The bound address (`[::]:port` for a dual-stack server).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    fn serve(tcp: TcpListener, udp: UdpSocket) -> EchoServer {
        let local_addr = tcp.local_addr().expect("a bound listener has an address");
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let threads = vec![
            thread::spawn({
                let stop = Arc::clone(&stop);
                let connections = Arc::clone(&connections);
                move || accept_loop(tcp, &stop, &connections)
            }),
            thread::spawn({
                let stop = Arc::clone(&stop);
                move || udp_loop(udp, &stop)
            }),
        ];
        EchoServer {
            local_addr,
            stop,
            threads,
            connections,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The acceptor has stopped, so no connection thread is added any more.
        let connections =
            std::mem::take(&mut *self.connections.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in connections {
            let _ = thread.join();
        }
    }
}

/// Binds TCP and UDP to the same address and port.
fn bind(addr: SocketAddr) -> io::Result<(TcpListener, UdpSocket)> {
    // With port 0 the kernel picks a port free for TCP; UDP may have it taken. Try a few.
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let tcp = socket(addr, Type::STREAM, Protocol::TCP)?;
        tcp.bind(&SockAddr::from(addr))?;
        tcp.listen(128)?;
        let bound = tcp.local_addr()?.as_socket().expect("an IP socket");
        let udp = socket(addr, Type::DGRAM, Protocol::UDP)?;
        match udp.bind(&SockAddr::from(bound)) {
            Ok(()) => return Ok((tcp.into(), udp.into())),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("at least one attempt"))
}

fn socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // Dual stack whatever the namespace's net.ipv6.bindv6only says.
        socket.set_only_v6(false)?;
    }
    Ok(socket)
}

fn accept_loop(
    listener: TcpListener,
    stop: &Arc<AtomicBool>,
    connections: &Mutex<Vec<JoinHandle<()>>>,
) {
    // Non-blocking so that the loop sees the stop flag without a connection to wake it.
    if let Err(error) = listener.set_nonblocking(true) {
        eprintln!("echo server: {error}");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let stop = Arc::clone(stop);
                let thread = thread::spawn(move || echo_connection(stream, &stop));
                connections
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(thread);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(error) => {
                eprintln!("echo server: accept: {error}");
                thread::sleep(POLL);
            }
        }
    }
}

fn echo_connection(mut stream: TcpStream, stop: &AtomicBool) {
    if stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(POLL)))
        .is_err()
    {
        return;
    }
    let mut buffer = [0; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(len) => {
                if stream.write_all(&buffer[..len]).is_err() {
                    return;
                }
            }
            Err(error) if is_timeout(&error) => {}
            Err(_) => return,
        }
    }
}

fn udp_loop(socket: UdpSocket, stop: &AtomicBool) {
    if socket.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buffer = [0; 65536];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buffer) {
            Ok((len, peer)) => {
                let _ = socket.send_to(&buffer[..len], peer);
            }
            Err(error) if is_timeout(&error) => {}
            Err(error) => {
                eprintln!("echo server: UDP: {error}");
                thread::sleep(POLL);
            }
        }
    }
}

/// A read timeout shows as `WouldBlock` or `TimedOut` depending on the platform.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
