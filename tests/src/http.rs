//! A minimal HTTP/1.1 client for the agent's HTTP listener, which runs inside a test namespace:
//! the connection is opened from a thread in that namespace (and the socket stays there), the
//! request and answer go over it from the test's thread. One request per connection
//! (`Connection: close`), so the answer ends where the stream does.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

/// How long connecting and each read or write may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A request to send with [`Request::send`].
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    pub fn post(path: &str) -> Request {
        Request::new("POST", path)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// A body as given; set `Content-Type` yourself.
    pub fn body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self
    }

    /// A JSON body.
    pub fn json(mut self, body: &serde_json::Value) -> Request {
        self.body = body.to_string().into_bytes();
        self.header("Content-Type", "application/json")
    }

    /// An HTML form's body (`application/x-www-form-urlencoded`).
    pub fn form(mut self, fields: &[(&str, &str)]) -> Request {
        let encoded: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
            .collect();
        self.body = encoded.join("&").into_bytes();
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }

    /// Sends the request to `addr` from inside `netns` and reads the whole answer.
    pub fn send(&self, netns: &Netns, addr: SocketAddr) -> io::Result<Response> {
        let stream = netns.run(|| TcpStream::connect_timeout(&addr, TIMEOUT))?;
        self.send_on(stream, addr)
    }

    /// [`Request::send`] from the source address `from`, one of the namespace's own.
    pub fn send_from(&self, netns: &Netns, from: IpAddr, addr: SocketAddr) -> io::Result<Response> {
        let stream = netns.run(|| {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
            socket.connect_timeout(&SockAddr::from(addr), TIMEOUT)?;
            io::Result::Ok(TcpStream::from(socket))
        })?;
        self.send_on(stream, addr)
    }

    fn send_on(&self, mut stream: TcpStream, addr: SocketAddr) -> io::Result<Response> {
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(&self.body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Response::parse(&raw)
    }
}

/// What the server answered.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name` (any case), e.g. `set-cookie`.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    fn parse(raw: &[u8]) -> io::Result<Response> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad("the answer has no end of headers"))?;
        let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line `{status_line}`")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut response = Response {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        };
        if response
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            response.body = dechunk(&response.body).ok_or_else(|| bad("bad chunked body"))?;
        }
        Ok(response)
    }
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page served at `/` from a port of its own in a namespace: another site on the same host,
/// for the tests of what the agent's pages refuse to do for other sites. Serves until dropped.
pub struct OtherSite {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl OtherSite {
    pub fn serve(netns: &Netns, html: String) -> io::Result<OtherSite> {
        let listener = netns.run(|| std::net::TcpListener::bind("127.0.0.1:0"))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Ok(OtherSite { port, stop })
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_answer_is_read_with_its_headers() {
        let raw = b"HTTP/1.1 303 See Other\r\nLocation: /login\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\nbody";
        let response = Response::parse(raw).unwrap();
        assert_eq!(response.status, 303);
        assert_eq!(response.header("location"), Some("/login"));
        assert_eq!(response.headers("Set-Cookie"), ["a=1", "b=2"]);
        assert_eq!(response.text(), "body");
    }

    #[test]
    fn a_chunked_answer_is_put_back_together() {
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        let response = Response::parse(raw).unwrap();
        assert_eq!(response.json(), serde_json::json!({"a": 1}));
    }

    #[test]
    fn form_fields_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
