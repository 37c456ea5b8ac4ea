//! Whether traffic from a given source address gets through: a short exchange with an
//! [`crate::EchoServer`]. Call these inside the client's namespace with [`crate::Netns::run`].
//!
//! The `*_exchange` forms say why an exchange failed, for a test's failure message; the `bool`
//! forms read well in assertions.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::unique;

/// Whether a TCP connection from `from` to `to` opens within `timeout` and echoes a message.
pub fn tcp_connects(from: IpAddr, to: SocketAddr, timeout: Duration) -> bool {
    tcp_exchange(from, to, timeout).is_ok()
}

/// Whether a UDP datagram from `from` to `to` comes back within `timeout`.
pub fn udp_roundtrip(from: IpAddr, to: SocketAddr, timeout: Duration) -> bool {
    udp_exchange(from, to, timeout).is_ok()
}

/// Connects from `from` (any port) to `to`, sends a message and reads it back; each step may
/// take up to `timeout`.
pub fn tcp_exchange(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
    socket.connect_timeout(&SockAddr::from(to), timeout)?;
    let mut stream = std::net::TcpStream::from(socket);
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let message = message(from, to);
    stream.write_all(&message)?;
    let mut echoed = vec![0; message.len()];
    stream.read_exact(&mut echoed)?;
    check_echo(&message, &echoed)
}

/// Sends one datagram from `from` (any port) to `to` and waits up to `timeout` for its echo.
pub fn udp_exchange(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<()> {
    let socket = UdpSocket::bind(SocketAddr::new(from, 0))?;
    // Connected: only the server's answer is received.
    socket.connect(to)?;
    socket.set_read_timeout(Some(timeout))?;
    let message = message(from, to);
    socket.send(&message)?;
    let mut echoed = vec![0; message.len() + 1];
    let len = socket.recv(&mut echoed)?;
    check_echo(&message, &echoed[..len])
}

/// A message no other exchange sends, so a late echo of an earlier one is not mistaken for
/// this one's.
fn message(from: IpAddr, to: SocketAddr) -> Vec<u8> {
    format!("tracking test {from} -> {to} #{}\n", unique::next()).into_bytes()
}

fn check_echo(sent: &[u8], echoed: &[u8]) -> io::Result<()> {
    if sent == echoed {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "sent {:?}, got back {:?}",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(echoed)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::EchoServer;

    const TIMEOUT: Duration = Duration::from_secs(2);

    // These use the test process's own namespace and loopback, so they need no root.

    #[test]
    fn tcp_and_udp_reach_an_echo_server_on_loopback() {
        let echo = EchoServer::start_here(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let from = IpAddr::from(Ipv4Addr::LOCALHOST);
        tcp_exchange(from, echo.local_addr(), TIMEOUT).unwrap();
        udp_exchange(from, echo.local_addr(), TIMEOUT).unwrap();
    }

    #[test]
    fn one_dual_stack_echo_server_answers_both_families() {
        let echo = EchoServer::start_here(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).unwrap();
        for from in [
            IpAddr::from(Ipv4Addr::LOCALHOST),
            IpAddr::from(Ipv6Addr::LOCALHOST),
        ] {
            let to = SocketAddr::new(from, echo.port());
            assert!(tcp_connects(from, to, TIMEOUT), "TCP from {from}");
            assert!(udp_roundtrip(from, to, TIMEOUT), "UDP from {from}");
        }
    }

    #[test]
    fn nothing_listening_means_no_connection() {
        // Bind and drop to find a port that is (very likely) closed.
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let from = IpAddr::from(Ipv4Addr::LOCALHOST);
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(!tcp_connects(from, to, TIMEOUT));
        assert!(!udp_roundtrip(from, to, Duration::from_millis(200)));
    }

    #[test]
    fn a_source_address_of_the_wrong_family_fails_instead_of_passing() {
        let echo = EchoServer::start_here(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let from = IpAddr::from(Ipv6Addr::LOCALHOST);
        assert!(!tcp_connects(from, echo.local_addr(), TIMEOUT));
        assert!(!udp_roundtrip(from, echo.local_addr(), TIMEOUT));
    }
}
