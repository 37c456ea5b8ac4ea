//! Requests to the agent's HTTP listener, which runs inside a test namespace: the connection is
//! opened from a thread in that namespace (and the socket stays there), then hyper's HTTP/1.1
//! client sends the request and reads the answer over it from the test's thread. One request
//! per connection, each answer read whole.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

/// How long connecting, and the whole exchange, may take.
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
        self.body = serde_urlencoded::to_string(fields)
            .expect("text fields encode")
            .into_bytes();
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

    fn send_on(&self, stream: TcpStream, addr: SocketAddr) -> io::Result<Response> {
        stream.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let exchange = async {
            let stream = tokio::net::TcpStream::from_std(stream)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(io::Error::other)?;
            let connection = tokio::spawn(connection);
            let mut request = hyper::Request::builder()
                .method(self.method.as_str())
                .uri(self.path.as_str())
                .header("Host", addr.to_string());
            for (name, value) in &self.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = request
                .body(Full::new(Bytes::from(self.body.clone())))
                .map_err(io::Error::other)?;
            let answer = sender
                .send_request(request)
                .await
                .map_err(io::Error::other)?;
            let status = answer.status().as_u16();
            let headers = answer
                .headers()
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect();
            let body = answer
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?
                .to_bytes()
                .to_vec();
            connection.abort();
            io::Result::Ok(Response {
                status,
                headers,
                body,
            })
        };
        runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, exchange)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no whole answer in time"))?
        })
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
    fn form_fields_are_encoded() {
        let request = Request::post("/login").form(&[("a b&c", "d/é"), ("next", "/")]);
        assert_eq!(
            String::from_utf8(request.body).unwrap(),
            "a+b%26c=d%2F%C3%A9&next=%2F"
        );
    }
}
