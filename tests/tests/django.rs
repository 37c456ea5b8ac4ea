//! The Django package end to end: the example site (`integrations/django/example`, configured
//! as django-user-tracking's documentation says) under real gunicorn with three workers, in
//! front of the real agent, both in the server namespace; clients from several addresses of
//! the client namespace, IPv4 and IPv6, with sessions of their own. Every test runs once with
//! Django 4.2 and once with 5.2, from the environments `cargo xtask setup` makes. Needs root;
//! run with `cargo xtask test`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tempfile::TempDir;
use tests::{
    Agent, AgentOptions, Browser, Topology,
    browser::artifact_path,
    django::{Django, DjangoOptions, Venv},
    http::{Request, Response},
    require_root,
};
use tracking_agent::geoip::testdb::{self, LINKOPING, LONDON, MILTON};

/// Where the agent listens inside the server namespace (the package's default).
const AGENT: &str = "127.0.0.1:8080";
const DJANGO_PORT: u16 = 8000;
/// The ban cache of the site: how long a verdict stands.
const BAN_CACHE: Duration = Duration::from_secs(1);
/// How long what the site sent may take to show at the agent.
const ARRIVES: Duration = Duration::from_secs(10);

/// The server namespace runs the agent (XDP on its end of the cable) and the site; the client
/// namespace has three IPv4 and three IPv6 addresses. Dropped in field order: the site first
/// (its workers flush to the agent), then the agent, then the namespaces.
struct Fixture {
    django: Django,
    agent: Agent,
    topology: Topology,
    admin_token: String,
    /// Holds the agent's GeoIP database, when it has one.
    _geoip: Option<TempDir>,
}

impl Fixture {
    fn new(venv: &str) -> Fixture {
        Fixture::start(venv, false)
    }

    /// With the test City database: visitors from its addresses are on the map.
    fn with_geoip(venv: &str) -> Fixture {
        Fixture::start(venv, true)
    }

    fn start(venv: &str, geoip: bool) -> Fixture {
        require_root();
        let venv = Venv::find(venv).unwrap_or_else(|e| panic!("{e}"));
        let topology = Topology::new().expect("topology");
        let mut options = AgentOptions::new(topology.server_iface()).args(["--http", AGENT]);
        let geoip = geoip.then(|| {
            let dir = tempfile::tempdir().expect("a directory");
            let path = dir.path().join("City.mmdb");
            testdb::write_city_database(&path).expect("test GeoIP database");
            options = options.clone().arg("--geoip-db").arg(&path);
            dir
        });
        let agent = Agent::start(topology.server(), options).expect("agent");
        // The tokens the agent generated next to its database, as a site would read them; it
        // writes them once its socket answers.
        let hook_file = agent.dir().join("hook-token");
        let admin_file = agent.dir().join("admin-token");
        let deadline = Instant::now() + Duration::from_secs(10);
        let admin_token = loop {
            match std::fs::read_to_string(&admin_file) {
                Ok(token) if hook_file.exists() && !token.trim().is_empty() => {
                    break token.trim().to_owned();
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("{}: {e}\n{}", admin_file.display(), agent.log_tail())
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let options = DjangoOptions::new(SocketAddr::new("::".parse().unwrap(), DJANGO_PORT))
            .workers(3)
            .env("TRACKING_AGENT_URL", format!("http://{AGENT}"))
            .env("TRACKING_HOOK_TOKEN_FILE", hook_file)
            .env("TRACKING_ADMIN_TOKEN_FILE", admin_file)
            .env("TRACKING_TRUSTED_PROXIES", proxy(&topology).to_string())
            .env(
                "TRACKING_BAN_CACHE_SECONDS",
                BAN_CACHE.as_secs_f64().to_string(),
            )
            .env("TRACKING_ACTIVE_CACHE_SECONDS", "0.5");
        let django = Django::start(topology.server(), &venv, options).expect("the site");
        Fixture {
            django,
            agent,
            topology,
            admin_token,
            _geoip: geoip,
        }
    }

    fn site_for(&self, from: IpAddr) -> SocketAddr {
        let server: IpAddr = match from {
            IpAddr::V4(_) => self.topology.server_v4().into(),
            IpAddr::V6(_) => self.topology.server_v6().into(),
        };
        SocketAddr::new(server, DJANGO_PORT)
    }

    /// A new visitor from `from`, with no cookies yet.
    fn visitor(&self, from: IpAddr) -> Visitor {
        Visitor {
            from,
            cookies: BTreeMap::new(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) e2e".into(),
        }
    }

    fn admin(&self, path: &str) -> Value {
        let r = Request::get(path)
            .bearer(&self.admin_token)
            .send(self.topology.server(), AGENT.parse().unwrap())
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.agent.log_tail()));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// The agent's active visitors by key.
    fn visitors(&self) -> BTreeMap<String, Value> {
        let all = self.admin("/v1/visitors?active=true&limit=10000");
        all.as_array()
            .expect("a list")
            .iter()
            .map(|v| (v["key"].as_str().unwrap().to_owned(), v.clone()))
            .collect()
    }

    /// `visits` of the agent's stats: `tracked`, `untracked`, ...
    fn visit_stats(&self) -> (u64, u64) {
        let visits = self.admin("/v1/stats")["visits"].clone();
        (
            visits["tracked"].as_u64().unwrap(),
            visits["untracked"].as_u64().unwrap(),
        )
    }

    /// Waits until `check` holds, failing with what it last saw and both logs.
    fn eventually<T: std::fmt::Debug>(
        &self,
        what: &str,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + ARRIVES;
        loop {
            match check() {
                Ok(value) => return value,
                Err(last) if Instant::now() > deadline => panic!(
                    "{what} did not happen within {ARRIVES:?}; last: {last}\n{}\n{}",
                    self.django.log_tail(),
                    self.agent.log_tail()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn client_v4(&self, i: usize) -> IpAddr {
        self.topology.client_v4()[i].into()
    }

    fn client_v6(&self, i: usize) -> IpAddr {
        self.topology.client_v6()[i].into()
    }
}

/// The trusted proxy: the third IPv4 address of the client namespace.
fn proxy(topology: &Topology) -> IpAddr {
    topology.client_v4()[2].into()
}

/// A browser of a sort: one source address, its cookies, its user agent.
struct Visitor {
    from: IpAddr,
    cookies: BTreeMap<String, String>,
    user_agent: String,
}

impl Visitor {
    fn send(&mut self, f: &Fixture, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(path).header("User-Agent", &self.user_agent);
        if !self.cookies.is_empty() {
            let cookie: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header("Cookie", &cookie.join("; "));
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let r = request
            .send_from(f.topology.client(), self.from, f.site_for(self.from))
            .unwrap_or_else(|e| {
                panic!(
                    "GET {path} from {}: {e}\n{}",
                    self.from,
                    f.django.log_tail()
                )
            });
        for set in r.headers("set-cookie") {
            if let Some((name, value)) = set.split(';').next().and_then(|c| c.split_once('=')) {
                self.cookies
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        r
    }

    /// A page that must be served.
    fn get(&mut self, f: &Fixture, path: &str) -> Response {
        self.get_with(f, path, &[])
    }

    fn get_with(&mut self, f: &Fixture, path: &str, headers: &[(&str, &str)]) -> Response {
        let r = self.send(f, path, headers);
        assert_eq!(r.status, 200, "GET {path} from {}: {}", self.from, r.text());
        r
    }

    /// The agent's key of this visitor's session.
    fn key(&self) -> String {
        format!(
            "s:{}",
            self.cookies.get("sessionid").expect("a session cookie")
        )
    }
}

/// The text of the element with `id` in a page: `<p id="site">3 active users</p>`.
fn element(html: &str, id: &str) -> String {
    let start = html
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[start..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].trim().to_owned()
}

/// Whether TCP from `from` to `to` connects within 700 ms.
fn connects(fixture: &Fixture, from: IpAddr, to: SocketAddr) -> bool {
    fixture.topology.client().run(|| {
        let socket =
            Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket
            .bind(&SockAddr::from(SocketAddr::new(from, 0)))
            .unwrap();
        socket
            .connect_timeout(&SockAddr::from(to), Duration::from_millis(700))
            .is_ok()
    })
}

fn visits_from_several_addresses_and_sessions_reach_the_agent_and_the_template_tags_agree(
    venv: &str,
) {
    let f = Fixture::new(venv);
    // alice and bob log in; the others are guests. Two sessions come from one address.
    let mut alice = f.visitor(f.client_v4(0));
    let mut guest4 = f.visitor(f.client_v4(1));
    let mut bob = f.visitor(f.client_v6(0));
    let mut guest6 = f.visitor(f.client_v6(1));
    let mut second = f.visitor(f.client_v4(0));
    alice.get_with(
        &f,
        "/enter/alice/",
        &[("Referer", "https://news.example/a")],
    );
    alice.get(&f, "/blog/one/");
    guest4.get(&f, "/");
    guest4.get(&f, "/blog/one/");
    guest4.get(&f, "/blog/two/");
    bob.get(&f, "/enter/bob/");
    bob.get(&f, "/blog/one/");
    guest6.get_with(
        &f,
        "/blog/two/",
        &[("Referer", "https://search.example/?q=x")],
    );
    second.get(&f, "/blog/one/");

    // (visitor, address, user, referrer, last page, page views)
    let expected = [
        (
            &alice,
            "alice",
            Some("https://news.example/a"),
            "/blog/one/",
            2,
        ),
        (&guest4, "", None, "/blog/two/", 3),
        (&bob, "bob", None, "/blog/one/", 2),
        (
            &guest6,
            "",
            Some("https://search.example/?q=x"),
            "/blog/two/",
            1,
        ),
        (&second, "", None, "/blog/one/", 1),
    ];
    let seen = f.eventually("every page view at the agent", || {
        let visitors = f.visitors();
        let views: u64 = visitors
            .values()
            .map(|v| v["page_views"].as_u64().unwrap())
            .sum();
        if views == 9 {
            Ok(visitors)
        } else {
            Err(format!("{views} page views: {visitors:?}"))
        }
    });
    assert_eq!(seen.len(), 5, "one visitor a session: {seen:?}");
    for (visitor, user, referrer, last_page, views) in expected {
        let record = &seen[&visitor.key()];
        assert_eq!(record["ip"], visitor.from.to_string(), "{record}");
        assert_eq!(record["user"].as_str().unwrap_or(""), user, "{record}");
        assert_eq!(record["referrer"].as_str(), referrer, "{record}");
        assert_eq!(record["last_page"], last_page, "{record}");
        assert_eq!(record["page_views"], views, "{record}");
        assert_eq!(record["user_agent"], "Mozilla/5.0 (X11; Linux x86_64) e2e");
    }

    // The tags' answers are a second old at most: wait that out, then have a visitor who is on
    // /blog/two/ already look at it again (which changes no count) and read the tags.
    std::thread::sleep(Duration::from_millis(700));
    let site = f.admin("/v1/active");
    let page = f.admin("/v1/active?path=/blog/two/");
    assert_eq!(
        (site["visitors"].as_u64(), page["visitors"].as_u64()),
        (Some(5), Some(2))
    );
    let html = guest4.get(&f, "/blog/two/").text();
    assert_eq!(element(&html, "site"), "5 active users");
    assert_eq!(
        element(&html, "page"),
        "2 of 5 active users are reading this page"
    );
    assert_eq!(element(&html, "user"), "guest");
    assert_eq!(
        element(&alice.get(&f, "/blog/one/").text(), "user"),
        "alice"
    );
}

fn a_banned_client_behind_the_trusted_proxy_gets_403_and_forwarding_cannot_spoof_a_ban(venv: &str) {
    let f = Fixture::new(venv);
    f.agent.cli_ok(["ban", "add", "198.51.100.7"]);
    let mut through_proxy = f.visitor(proxy(&f.topology));
    let banned = [("X-Forwarded-For", "198.51.100.7")];
    let r = through_proxy.send(&f, "/", &banned);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("banned"), "{}", r.text());
    // The banned client writes a clean address itself; the proxy appends the real one.
    let spoofed = [("X-Forwarded-For", "192.0.2.50, 198.51.100.7")];
    assert_eq!(through_proxy.send(&f, "/", &spoofed).status, 403);
    // Another client of the proxy is served, and tracked under its own address.
    let mut other = f.visitor(proxy(&f.topology));
    other.get_with(&f, "/", &[("X-Forwarded-For", "198.51.100.8")]);
    // A client that is no proxy cannot make itself someone else, nor get someone banned.
    let direct_ip = f.client_v4(1);
    let mut direct = f.visitor(direct_ip);
    direct.get_with(&f, "/", &[("X-Forwarded-For", "198.51.100.7")]);
    let visitors = f.eventually("both served visits at the agent", || {
        let v = f.visitors();
        if v.len() == 2 {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    });
    assert_eq!(visitors[&other.key()]["ip"], "198.51.100.8");
    assert_eq!(visitors[&direct.key()]["ip"], direct_ip.to_string());
    assert!(
        !visitors.values().any(|v| v["ip"] == "198.51.100.7"),
        "a refused request is no visit: {visitors:?}"
    );

    // Banned by its own address, a direct client's packets are dropped before Django.
    let site = f.site_for(direct_ip);
    assert!(connects(&f, direct_ip, site));
    f.agent.cli_ok(["ban", "add", &direct_ip.to_string()]);
    assert!(
        !connects(&f, direct_ip, site),
        "XDP drops the banned client"
    );
    f.agent.cli_ok(["ban", "rm", &direct_ip.to_string()]);

    // Unbanned, the client behind the proxy is served once the cached verdicts expire.
    f.agent.cli_ok(["ban", "rm", "198.51.100.7"]);
    f.eventually("the unbanned client served", || {
        let status = through_proxy.send(&f, "/", &banned).status;
        if status == 200 {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    });
}

fn the_site_keeps_serving_while_the_agent_is_stopped_and_visits_resume_when_it_returns(venv: &str) {
    let mut f = Fixture::new(venv);
    let mut regular = f.visitor(f.client_v4(1));
    regular.get(&f, "/");
    let key = regular.key();
    f.eventually("the first visit at the agent", || {
        f.visitors()
            .contains_key(&key)
            .then_some(())
            .ok_or_else(String::new)
    });

    f.agent.stop();
    // What the workers had cached from the agent goes stale first.
    std::thread::sleep(Duration::from_millis(600));
    let started = Instant::now();
    for _ in 0..10 {
        regular.get(&f, "/away/");
    }
    let mut newcomer = f.visitor(f.client_v6(1));
    for _ in 0..5 {
        let html = newcomer.get(&f, "/away/").text();
        assert_eq!(
            element(&html, "site"),
            "0 active users",
            "the tags without the agent"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "15 pages took {elapsed:?}"
    );
    for line in [
        "cannot send visits to the agent",
        "cannot check bans with the agent",
        "letting requests through meanwhile",
        "cannot read active visitors from the agent",
    ] {
        f.eventually(&format!("`{line}` in the log"), || {
            f.django
                .log()
                .contains(line)
                .then_some(())
                .ok_or_else(String::new)
        });
    }

    f.agent.restart().expect("agent restart");
    let newcomer_key = newcomer.key();
    f.eventually("the visits kept while the agent was away", || {
        let v = f.visitors();
        let views = |k: &str| v.get(k).and_then(|r| r["page_views"].as_u64());
        match (views(&key), views(&newcomer_key)) {
            (Some(11), Some(5)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    regular.get(&f, "/back/");
    f.eventually("a visit after the agent returned", || {
        let v = f.visitors();
        match v.get(&key) {
            Some(r) if r["page_views"] == 12 && r["last_page"] == "/back/" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        f.django.log().contains("answers again"),
        "{}",
        f.django.log_tail()
    );
}

fn no_tracking_prefixes_and_user_agent_rules_hold(venv: &str) {
    let f = Fixture::new(venv);
    f.agent.cli_ok(["ua", "add", "Googlebot"]);
    let mut someone = f.visitor(f.client_v4(0));
    for _ in 0..3 {
        someone.get(&f, "/private/area/");
    }
    let mut bot = f.visitor(f.client_v4(1));
    bot.user_agent =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)".into();
    bot.get(&f, "/");
    bot.get(&f, "/blog/one/");
    someone.get(&f, "/");
    // The bot's visits reach the agent, which does not track them; the private ones never
    // leave the site.
    f.eventually("one tracked and two untracked visits", || {
        let stats = f.visit_stats();
        if stats == (1, 2) {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(f.visit_stats(), (1, 2), "nothing more arrives");
    let visitors = f.visitors();
    assert_eq!(visitors.len(), 1, "{visitors:?}");
    assert_eq!(visitors[&someone.key()]["last_page"], "/");
    assert_eq!(visitors[&someone.key()]["page_views"], 1);
}

fn the_map_and_live_pages_are_for_staff_and_show_the_agents_visitors(venv: &str) {
    let f = Fixture::new(venv);
    let mut alice = f.visitor(f.client_v4(0));
    alice.get(&f, "/enter/alice/");
    let mut guest = f.visitor(f.client_v6(0));
    guest.get(&f, "/blog/one/");
    let mut bob = f.visitor(f.client_v4(1));
    bob.get(&f, "/enter/bob/");
    let mut anonymous = f.visitor(f.client_v4(1));
    for (visitor, name) in [(&mut anonymous, "anonymous"), (&mut bob, "bob")] {
        let r = visitor.send(&f, "/tracking/map/", &[]);
        assert_eq!(r.status, 302, "{name}: {}", r.text());
        assert!(
            r.header("location").unwrap().starts_with("/login/"),
            "{name}"
        );
    }
    // The anonymous visitor has no session: it is known by its address and user agent.
    f.eventually("four visitors at the agent", || {
        let n = f.visitors().len();
        if n == 4 { Ok(()) } else { Err(n.to_string()) }
    });

    let html = alice.get(&f, "/tracking/map/").text();
    assert_eq!(
        element(&html, "example-map"),
        "DEFAULT_TRACKING_TEMPLATE: 4 active"
    );
    for address in [f.client_v4(0), f.client_v6(0), f.client_v4(1)] {
        assert!(
            html.contains(&address.to_string()),
            "{address} not on the map: {html}"
        );
    }
    let data: Value = serde_json::from_str(&alice.get(&f, "/tracking/map/data/").text()).unwrap();
    let agent_map = f.admin("/v1/map");
    let ips = |list: &Value| -> BTreeSet<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|v| v["ip"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ips(&data["visitors"]), ips(&agent_map["visitors"]));
    assert_eq!(data["geoip"], Value::Null);

    let live = alice.get(&f, "/tracking/live/").text();
    assert!(
        live.contains("alice") && live.contains("bob") && live.contains("/blog/one/"),
        "{live}"
    );
    let data: Value = serde_json::from_str(&alice.get(&f, "/tracking/live/data/").text()).unwrap();
    assert_eq!(data["counts"], f.admin("/v1/active"));
    let world = alice.get(&f, "/tracking/world.svg");
    assert_eq!(world.header("content-type"), Some("image/svg+xml"));
}

fn several_workers_each_send_their_visits(venv: &str) {
    let f = Fixture::new(venv);
    let sources = [
        f.client_v4(0),
        f.client_v4(1),
        f.client_v6(0),
        f.client_v6(1),
    ];
    // Eight at a time, each taking 50 ms: the three workers share them.
    let workers: BTreeSet<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let from = sources[i % sources.len()];
                let f = &f;
                scope.spawn(move || {
                    let r = Request::get("/slow/")
                        .send_from(f.topology.client(), from, f.site_for(from))
                        .expect("GET /slow/");
                    assert_eq!(r.status, 200);
                    r.header("x-worker").expect("X-Worker").to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(workers.len() >= 2, "served by {workers:?}");
    f.eventually("24 visits at the agent", || {
        let stats = f.visit_stats();
        if stats == (24, 0) {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    });
    let views: BTreeMap<String, u64> = f
        .visitors()
        .values()
        .map(|v| {
            (
                v["ip"].as_str().unwrap().to_owned(),
                v["page_views"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(views.values().sum::<u64>(), 24, "{views:?}");
    assert_eq!(
        views.len(),
        4,
        "no session, one visitor an address: {views:?}"
    );
}

#[test]
fn the_map_and_live_pages_update_in_a_browser_as_visitors_come_and_go() {
    let f = Fixture::with_geoip("django-5.2");
    // Visitors from the test database's places, all behind the trusted proxy.
    let mut london = f.visitor(proxy(&f.topology));
    london.get_with(&f, "/", &[("X-Forwarded-For", LONDON.probe)]);
    let mut milton = f.visitor(proxy(&f.topology));
    milton.get_with(&f, "/blog/one/", &[("X-Forwarded-For", MILTON.probe)]);

    // The browser logs in as alice (a visitor too, from an address the database does not know).
    let mut browser = Browser::launch(f.topology.client()).expect("chromium");
    let site = format!("http://{}:{DJANGO_PORT}", f.topology.server_v4());
    browser.goto(&format!("{site}/enter/alice/")).unwrap();
    browser.goto(&format!("{site}/tracking/map/")).unwrap();
    let shows = |browser: &mut Browser, expression: &str| {
        browser
            .wait_for(expression, ARRIVES)
            .unwrap_or_else(|e| panic!("{e}\n{}\n{}", f.django.log_tail(), browser.log_tail()))
    };
    // Alice's own visit reaches the agent in the package's next batch, after the page may
    // have drawn: the page polls, so her count shows without a reload.
    shows(
        &mut browser,
        "document.querySelectorAll('circle.marker').length === 2
            && document.querySelector('.tracking-world img').naturalWidth > 0
            && document.querySelector('.tracking-summary').textContent
                .startsWith('3 active visitors')",
    );
    let title = browser
        .eval("document.title + ' | ' + document.querySelector('.tracking-summary').textContent")
        .unwrap();
    assert_eq!(
        title,
        format!(
            "The example site's visitors | 3 active visitors · {}",
            testdb::DESCRIPTION
        )
    );
    // London's marker sits where the equirectangular projection puts it.
    let at = browser
        .eval(
            "[...document.querySelectorAll('circle.marker')].filter(c =>
                c.querySelector('title').textContent.startsWith('London'))
                .map(c => [Number(c.getAttribute('cx')), Number(c.getAttribute('cy'))])[0]",
        )
        .unwrap();
    let expected = [
        (LONDON.longitude + 180.0) / 360.0 * 1000.0,
        (90.0 - LONDON.latitude) / 180.0 * 500.0,
    ];
    for (i, want) in expected.iter().enumerate() {
        assert!(
            (at[i].as_f64().unwrap() - want).abs() < 0.1,
            "London at {at}"
        );
    }

    // A newcomer shows without a reload: the page polls its data.
    browser.eval("window.__notReloaded = true").unwrap();
    let mut linkoping = f.visitor(proxy(&f.topology));
    linkoping.get_with(&f, "/", &[("X-Forwarded-For", LINKOPING.probe)]);
    shows(
        &mut browser,
        "window.__notReloaded && document.querySelectorAll('circle.marker').length === 3
            && [...document.querySelectorAll('.tracking-list td')].some(td =>
                td.textContent === 'Linköping, Sweden')",
    );
    let path = artifact_path("pages/django-map.png");
    let png = browser.save_screenshot(&path).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("screenshot: {}", path.display());

    browser.goto(&format!("{site}/tracking/live/")).unwrap();
    shows(
        &mut browser,
        "document.querySelectorAll('.tracking-list tr[data-key]').length === 4
            && document.querySelector('[data-count=visitors]').textContent === '4'",
    );
    browser.eval("window.__notReloaded = true").unwrap();
    let mut bob = f.visitor(f.client_v6(0));
    bob.get(&f, "/enter/bob/");
    shows(
        &mut browser,
        "window.__notReloaded && document.querySelectorAll('.tracking-list tr[data-key]').length === 5
            && document.querySelector('[data-count=registered]').textContent === '2'
            && [...document.querySelectorAll('.tracking-list td')].some(td => td.textContent === 'bob')",
    );
    let path = artifact_path("pages/django-live.png");
    browser.save_screenshot(&path).expect("screenshot");
    println!("screenshot: {}", path.display());
}

/// Each scenario once with every Django the package supports.
macro_rules! with_each_django {
    ($($scenario:ident),* $(,)?) => {
        mod django_4_2 {
            $(#[test] fn $scenario() { super::$scenario("django-4.2") })*
        }
        mod django_5_2 {
            $(#[test] fn $scenario() { super::$scenario("django-5.2") })*
        }
    };
}

with_each_django!(
    visits_from_several_addresses_and_sessions_reach_the_agent_and_the_template_tags_agree,
    a_banned_client_behind_the_trusted_proxy_gets_403_and_forwarding_cannot_spoof_a_ban,
    the_site_keeps_serving_while_the_agent_is_stopped_and_visits_resume_when_it_returns,
    no_tracking_prefixes_and_user_agent_rules_hold,
    the_map_and_live_pages_are_for_staff_and_show_the_agents_visitors,
    several_workers_each_send_their_visits,
);
