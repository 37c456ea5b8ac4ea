//! systemd's readiness protocol (`Type=notify`): a datagram to the socket named by
//! `$NOTIFY_SOCKET`. Without the variable (not started by systemd) nothing is sent.

use std::{
    ffi::OsString,
    os::unix::net::{SocketAddr, UnixDatagram},
};

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("telling systemd `{state}` through {socket:?}: {source}")]
pub struct NotifyError {
    state: String,
    socket: OsString,
    #[source]
    source: std::io::Error,
}

/// Where notifications go: the socket `$NOTIFY_SOCKET` named when the agent started.
#[derive(Clone, Debug)]
pub struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    /// The notifier of `$NOTIFY_SOCKET`, read at start as systemd set it.
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
        }
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier { socket: None }
    }

    /// `READY=1`: the filter is attached and in line with the store, the listeners serve.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}\n",
            std::process::id()
        ))
    }

    /// `STOPPING=1`: the agent is stopping (the filter stays).
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1\n")
    }

    fn send(&self, state: &str) -> Result<(), NotifyError> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let failed = |source| NotifyError {
            state: state.lines().next().unwrap_or_default().to_string(),
            socket: socket.clone(),
            source,
        };
        let addr = address(socket).map_err(failed)?;
        let sender = UnixDatagram::unbound().map_err(failed)?;
        sender
            .send_to_addr(state.as_bytes(), &addr)
            .map_err(failed)?;
        Ok(())
    }
}

/// A path, or `@name` for a socket in the abstract namespace.
fn address(socket: &OsString) -> std::io::Result<SocketAddr> {
    use std::os::{linux::net::SocketAddrExt as _, unix::ffi::OsStrExt as _};
    let bytes = socket.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::path::Path::new(socket)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt as _;

    use super::*;

    #[test]
    fn ready_reaches_the_socket_systemd_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some(path.into_os_string()),
        };
        notifier.ready("filtering eth0").unwrap();
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.starts_with("READY=1\nSTATUS=filtering eth0\nMAINPID="),
            "{text}"
        );
    }

    #[test]
    fn an_abstract_socket_is_named_with_an_at_sign() {
        let name = format!("tracking-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier {
            socket: Some(format!("@{name}").into()),
        };
        notifier.stopping().unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }

    #[test]
    fn without_systemd_nothing_is_sent() {
        Notifier::none().ready("x").unwrap();
    }
}
