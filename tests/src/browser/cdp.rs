//! The Chrome DevTools Protocol over a websocket, as little of it as the tests need: commands
//! (`{"id", "method", "params", "sessionId"}` answered by `{"id", "result"}` or
//! `{"id", "error"}`) and events (`{"method", "params", "sessionId"}`), read in order from one
//! connection. Events that arrive while a command waits for its answer are kept for
//! [`Cdp::wait_event`].

use std::{
    collections::VecDeque,
    io,
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::BrowserError;

/// How long one read may block before the deadline is checked again.
const READ_SLICE: Duration = Duration::from_millis(200);
/// How long the websocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Cdp {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Events read while waiting for answers, oldest first.
    events: VecDeque<Value>,
}

impl Cdp {
    /// Opens the websocket at `url` (`ws://127.0.0.1:<port>/devtools/browser/<id>`) over
    /// `stream`, already connected to that port.
    pub(super) fn connect(stream: TcpStream, url: &str) -> Result<Cdp, BrowserError> {
        // The handshake needs blocking reads; a timeout would interrupt it half-way.
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let (socket, _) = tungstenite::client(url, stream).map_err(|error| {
            BrowserError::Protocol(format!("websocket handshake with {url}: {error}"))
        })?;
        socket.get_ref().set_read_timeout(Some(READ_SLICE))?;
        Ok(Cdp {
            socket,
            next_id: 1,
            events: VecDeque::new(),
        })
    }

    /// Sends `method` (to the page `session`, or to the browser when `None`) and waits for its
    /// answer.
    pub(super) fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, BrowserError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .map_err(|error| BrowserError::Protocol(format!("sending {method}: {error}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            let message = self.read(deadline, method)?;
            if message.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = message.get("error") {
                    return Err(BrowserError::Command {
                        method: method.to_owned(),
                        message: error["message"].as_str().unwrap_or("?").to_owned(),
                    });
                }
                return Ok(message["result"].clone());
            }
            if message.get("method").is_some() {
                self.events.push_back(message);
            }
        }
    }

    /// Waits for an event `method` of `session` whose params `wanted` accepts, taking it (and
    /// dropping the kept events before it).
    pub(super) fn wait_event(
        &mut self,
        session: &str,
        method: &str,
        wanted: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, BrowserError> {
        let matches = |event: &Value| {
            event["method"] == method
                && event["sessionId"].as_str() == Some(session)
                && wanted(&event["params"])
        };
        while let Some(event) = self.events.pop_front() {
            if matches(&event) {
                return Ok(event["params"].clone());
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let message = self.read(deadline, method)?;
            if matches(&message) {
                return Ok(message["params"].clone());
            }
        }
    }

    /// The next message, as JSON.
    fn read(&mut self, deadline: Instant, waiting_for: &str) -> Result<Value, BrowserError> {
        loop {
            if Instant::now() >= deadline {
                return Err(BrowserError::Timeout(format!(
                    "no answer to {waiting_for} from the browser"
                )));
            }
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str()).map_err(|error| {
                        BrowserError::Protocol(format!("a message that is not JSON: {error}"))
                    });
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(error))
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => {
                    return Err(BrowserError::Protocol(format!(
                        "reading from the browser while waiting for {waiting_for}: {error}"
                    )));
                }
            }
        }
    }
}
