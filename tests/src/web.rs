//! [`WebSite`]: the agent with its HTTP listener on `127.0.0.1:<port>` in a server namespace,
//! known tokens, and the requests and browser logins the tests of the HTTP side make.

use std::{
    ffi::OsString,
    net::{SocketAddr, TcpListener},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    Agent, AgentOptions, Browser, Topology,
    http::{Request, Response},
    require_root,
};

pub const ADMIN_TOKEN: &str = "admin-token-of-the-web-tests";
pub const HOOK_TOKEN: &str = "hook-token-of-the-web-tests";
/// How long the HTTP listener may take to answer after the agent's socket does.
const LISTENING: Duration = Duration::from_secs(20);
/// How long a page may take to show what a test waits for.
pub const SHOWS: Duration = Duration::from_secs(10);

pub struct WebSite {
    // Dropped first: the agent detaches before the namespaces go.
    pub agent: Agent,
    pub topology: Topology,
    pub http: SocketAddr,
}

impl WebSite {
    /// The agent with `--http 127.0.0.1:<free port>`, the test tokens and `args`.
    pub fn start(args: &[&str]) -> WebSite {
        WebSite::with(args, |options| options)
    }

    /// Like [`WebSite::start`], with the agent's daemon running in this process
    /// ([`AgentOptions::in_process`]).
    pub fn in_process(args: &[&str]) -> WebSite {
        WebSite::with(args, AgentOptions::in_process)
    }

    /// Like [`WebSite::start`], with the agent's options as `options` makes them (another
    /// `--database`, say).
    pub fn with(args: &[&str], options: impl FnOnce(AgentOptions) -> AgentOptions) -> WebSite {
        require_root();
        let topology = Topology::new().expect("topology");
        // A port nothing in the fresh namespace uses: bind port 0 there, and let it go.
        let port = topology.server().run(|| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        });
        let http = SocketAddr::from(([127, 0, 0, 1], port));
        let mut all: Vec<OsString> = [
            "--http",
            &http.to_string(),
            "--admin-token",
            ADMIN_TOKEN,
            "--hook-token",
            HOOK_TOKEN,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        all.extend(args.iter().map(OsString::from));
        let agent = Agent::start(
            topology.server(),
            options(AgentOptions::new(topology.server_iface()).args(all)),
        )
        .expect("agent");
        let site = WebSite {
            agent,
            topology,
            http,
        };
        site.wait_listening();
        site
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + LISTENING;
        loop {
            match Request::get("/login").send(self.topology.server(), self.http) {
                Ok(response) if response.status == 200 => return,
                result if Instant::now() >= deadline => panic!(
                    "the HTTP listener on {} did not serve /login within {LISTENING:?}: \
                     {result:?}\n{}",
                    self.http,
                    self.agent.log_tail()
                ),
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn send(&self, request: Request) -> Response {
        request
            .send(self.topology.server(), self.http)
            .unwrap_or_else(|error| {
                panic!("HTTP to {}: {error}\n{}", self.http, self.agent.log_tail())
            })
    }

    /// `http://127.0.0.1:<port><path>`, as a browser in the namespace reaches it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// A visit through the hook, as the site's app would post it; returns the answer.
    pub fn visit(&self, body: Value) -> Response {
        self.send(Request::post("/v1/visits").bearer(HOOK_TOKEN).json(&body))
    }

    /// `POST /login` with `token` from the agent's own origin, as its login form sends it.
    pub fn login(&self, token: &str) -> Response {
        self.send(
            Request::post("/login")
                .header("Origin", &self.url(""))
                .form(&[("token", token)]),
        )
    }

    /// The session cookie of a successful login, as `name=value`.
    pub fn session(&self) -> String {
        let response = self.login(ADMIN_TOKEN);
        session_cookie(&response)
            .unwrap_or_else(|| panic!("no session cookie: {:?}", response.headers))
    }

    /// A browser in the server namespace, logged in through the login form.
    pub fn browser(&self) -> Browser {
        let mut browser = Browser::launch(self.topology.server()).expect("chromium");
        browser.goto(&self.url("/login")).expect("the login page");
        browser
            .eval(&format!(
                "document.querySelector('input[name=token]').value = {};
                 document.querySelector('form[action=\"/login\"]').submit();",
                json!(ADMIN_TOKEN)
            ))
            .expect("submitting the login form");
        browser
            .wait_for(
                "location.pathname === '/' && document.readyState === 'complete'",
                SHOWS,
            )
            .unwrap_or_else(|e| panic!("the login did not land on the dashboard: {e}"));
        browser
    }

    /// `stats --json` through the CLI: its `visits` part.
    pub fn visit_stats(&self) -> Value {
        let stats: Value =
            serde_json::from_str(&self.agent.cli_ok(["stats", "--json"])).expect("stats JSON");
        stats["visits"].clone()
    }

    /// Waits until no answered visit waits for the store, and returns the visit stats then.
    pub fn drained(&self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.visit_stats();
            if stats["queued"] == 0 && stats["store_answers"] == true {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "visits still waiting for the store after {within:?}: {stats}\n{}",
                self.agent.log_tail()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ban ls --json` through the CLI.
    pub fn bans(&self) -> Vec<Value> {
        let list: serde_json::Value =
            serde_json::from_str(&self.agent.cli_ok(["ban", "ls", "--json"])).expect("ban ls JSON");
        list["bans"].as_array().expect("a list of bans").clone()
    }
}

/// The `tracking_session` cookie a response sets, when it sets one with a value.
pub fn session_cookie(response: &Response) -> Option<String> {
    response
        .headers("set-cookie")
        .into_iter()
        .filter_map(|c| c.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, value)| name.trim() == "tracking_session" && !value.is_empty())
        .map(|(name, value)| format!("{name}={value}"))
}

/// A kept-alive connection to the hook that posts visits one after another, as an app's
/// background sender does: for load and for the faults under load.
pub struct HookClient {
    stream: std::io::BufReader<std::net::TcpStream>,
    host: String,
}

impl HookClient {
    /// Connects from `netns` (the socket stays in it) to `addr`.
    pub fn connect(netns: &crate::Netns, addr: SocketAddr) -> std::io::Result<HookClient> {
        netns.run(|| HookClient::connect_here(addr))
    }

    /// Connects from the calling thread's namespace to `addr`.
    pub fn connect_here(addr: SocketAddr) -> std::io::Result<HookClient> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(HookClient {
            stream: std::io::BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    /// Posts one visit and returns the status of the answer.
    pub fn post(&mut self, visit: &Value) -> std::io::Result<u16> {
        use std::io::{BufRead as _, Read as _, Write as _};
        let body = visit.to_string();
        let request = format!(
            "POST /v1/visits HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {HOOK_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if self.stream.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection")
                    && value.trim().eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body)?;
        if close {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("closed after {status}"),
            ));
        }
        Ok(status)
    }
}
