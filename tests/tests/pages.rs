//! The pages in a real browser: the agent runs in a server namespace with its HTTP listener on
//! 127.0.0.1 there, visits come in through the hook, and a headless Chromium in the same
//! namespace logs in and looks at the map and the live page as an operator would. Screenshots
//! go to `target/test-artifacts/pages/`. Needs root and Chromium; run with `cargo xtask test`.

use std::{path::PathBuf, time::Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tests::{
    Browser,
    browser::artifact_path,
    dbip,
    http::{Request, Response},
    web::{ADMIN_TOKEN, HOOK_TOKEN, SHOWS, WebSite, session_cookie},
};
use tracking_agent::geoip::testdb::{self, LINKOPING, LONDON, MILTON, SAN_DIEGO};

/// The GeoIP databases a [`Site`]'s agent is given.
enum Databases {
    None,
    /// The test City database, in MaxMind's layout.
    TestCity,
    /// The test databases in ip-location-db's flat layout, an IPv4 and an IPv6 file named as
    /// DB-IP City Lite's are.
    TestFlat,
    /// The real DB-IP City Lite files.
    Dbip,
}

/// [`WebSite`] (the agent listening on `127.0.0.1:<port>` in a server namespace, logins and
/// browsers) with the GeoIP databases it was given.
struct Site {
    web: WebSite,
    /// Holds the test GeoIP databases, when there are any.
    _geoip: TempDir,
}

impl std::ops::Deref for Site {
    type Target = WebSite;

    fn deref(&self) -> &WebSite {
        &self.web
    }
}

impl Site {
    /// With the test City database.
    fn with_geoip() -> Site {
        Site::start(Databases::TestCity)
    }

    fn without_geoip() -> Site {
        Site::start(Databases::None)
    }

    fn start(databases: Databases) -> Site {
        Site::start_with(databases, None, &[])
    }

    /// With more arguments for the agent, and another store than its own SQLite file.
    fn start_with(databases: Databases, database: Option<&str>, extra: &[&str]) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = match databases {
            Databases::None => Vec::new(),
            Databases::TestCity => {
                let path = dir.path().join("GeoIP2-City-Test.mmdb");
                testdb::write_city_database(&path).expect("test GeoIP database");
                vec![path]
            }
            Databases::TestFlat => testdb::write_flat_databases(dir.path())
                .expect("test GeoIP databases")
                .to_vec(),
            Databases::Dbip => dbip::files().expect("DB-IP City Lite").to_vec(),
        };
        let mut args = Vec::new();
        for path in &paths {
            args.push("--geoip-db".to_owned());
            args.push(path.display().to_string());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let web = WebSite::with(&args, |options| match database {
            Some(database) => options.database(database),
            None => options,
        });
        Site { web, _geoip: dir }
    }

    /// One page view through the hook, as the site's app would post it.
    fn visit(&self, ip: &str, session: &str, url: &str, user: Option<&str>) {
        let response = self.send(Request::post("/v1/visits").bearer(HOOK_TOKEN).json(&json!({
            "ip": ip,
            "session_key": session,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) page-tests",
            "user": user,
            "referrer": "https://example.org/from",
            "url": url,
        })));
        assert_eq!(
            response.status,
            202,
            "the hook refused a visit: {}\n{}",
            response.text(),
            self.agent.log_tail()
        );
        assert_eq!(response.json()["tracked"], true, "{}", response.text());
    }

    /// [`Browser::wait_for`] that fails the test with the agent's and Chromium's logs.
    fn wait(&self, browser: &mut Browser, expression: &str) -> Value {
        match browser.wait_for(expression, SHOWS) {
            Ok(value) => value,
            Err(error) => {
                // What the browser shows instead, to tell a wrong page from a slow one.
                let page = browser
                    .eval(
                        "JSON.stringify({url: location.href, title: document.title,
                            text: document.body ? document.body.innerText.slice(0, 800) : null})",
                    )
                    .map_or_else(|e| e.to_string(), |v| v.to_string());
                panic!(
                    "{error}\nthe page: {page}\n{}\n{}",
                    browser.log_tail(),
                    self.agent.log_tail()
                )
            }
        }
    }
}

/// Saves a screenshot under `target/test-artifacts/pages/<name>` and checks it is a real
/// picture of the window, not an empty file.
fn screenshot(browser: &mut Browser, name: &str) -> PathBuf {
    screenshot_of_width(browser, name, 1000)
}

fn screenshot_of_width(browser: &mut Browser, name: &str, min_width: u32) -> PathBuf {
    let path = artifact_path(format!("pages/{name}"));
    let png = browser.save_screenshot(&path).expect("screenshot");
    println!("screenshot: {}", path.display());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // IHDR: width and height, big-endian, right after the signature and the chunk header.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= min_width && height >= 500, "{width}x{height}");
    // A blank page compresses to a few kilobytes; text, tables and a map do not.
    assert!(png.len() > 20_000, "{} bytes", png.len());
    path
}

/// The texts of the elements `selector` finds, as a JavaScript expression.
fn texts(selector: &str) -> String {
    format!(
        "[...document.querySelectorAll({})].map(e => e.textContent.trim())",
        json!(selector)
    )
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_map_shows_where_active_visitors_are() {
    let site = Site::with_geoip();
    site.visit(LONDON.probe, "london-1", "/blog/post", Some("alice"));
    site.visit(LINKOPING.probe, "linkoping-1", "/", None);

    let mut browser = site.browser();
    browser.goto(&site.url("/map")).unwrap();
    let places = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const places = {};
                return places.includes('London, United Kingdom')
                    && places.includes('Linköping, Sweden')
                    && document.querySelectorAll('circle.marker').length >= 2
                    && places; }})()",
            texts("table.map-list td.place")
        ),
    );
    assert_eq!(strings(&places).len(), 2, "{places}");

    // Markers sit where the equirectangular projection puts the cities on the 1000 x 500 map.
    let london = browser
        .eval(
            "(() => { const m = document.querySelector('circle.marker[data-city=London]');
                return [Number(m.getAttribute('cx')), Number(m.getAttribute('cy'))]; })()",
        )
        .unwrap();
    let (x, y) = (london[0].as_f64().unwrap(), london[1].as_f64().unwrap());
    let expected_x = (LONDON.longitude + 180.0) / 360.0 * 1000.0;
    let expected_y = (90.0 - LONDON.latitude) / 180.0 * 500.0;
    assert!(
        (x - expected_x).abs() < 0.2 && (y - expected_y).abs() < 0.2,
        "London drawn at ({x}, {y}), expected ({expected_x}, {expected_y})"
    );

    let summary = browser
        .eval("document.querySelector('.map-summary').textContent")
        .unwrap();
    assert!(
        summary.as_str().unwrap().contains(testdb::DESCRIPTION),
        "{summary}"
    );
    let notice_hidden = browser
        .eval("document.querySelector('.map-notice').hidden")
        .unwrap();
    assert_eq!(notice_hidden, true);
    // MaxMind's test data asks for no credit.
    assert_eq!(
        browser.eval(CREDIT).unwrap(),
        json!({"hidden": true, "text": null, "href": null})
    );
    // The world outline itself loaded (from the agent, not from anywhere else).
    let world = site.wait(
        &mut browser,
        "(() => { const img = document.querySelector('.world img');
            return img.complete && img.naturalWidth > 0 && img.src; })()",
    );
    assert_eq!(world, json!(site.url("/assets/world.svg")));

    let path = screenshot(&mut browser, "map.png");
    assert!(path.exists());
}

/// The map's credit line: whether it shows, its link's text and address.
const CREDIT: &str = "(() => { const p = document.querySelector('.map-attribution');
    const a = p.querySelector('a');
    return {hidden: p.hidden, text: a && a.textContent, href: a && a.getAttribute('href')}; })()";

/// The DB-IP credit as [`CREDIT`] reads it when it shows.
fn dbip_credit() -> Value {
    json!({"hidden": false, "text": "IP Geolocation by DB-IP", "href": "https://db-ip.com"})
}

/// Whether the page as drawn needs nothing a strict Content-Security-Policy forbids: no
/// inline script, no style attribute, no event handler attribute.
const NOTHING_INLINE: &str = "[...document.scripts].every(s => s.src)
    && document.querySelectorAll('[style]').length === 0
    && ![...document.querySelectorAll('*')].some(e =>
        [...e.attributes].some(a => a.name.startsWith('on')))";

/// `[longitude, latitude]` of the marker of `country`, from where it is drawn, inverting the
/// equirectangular projection of the 1000 x 500 map.
fn marker_of(browser: &mut Browser, country: &str) -> Value {
    browser
        .eval(&format!(
            "(() => {{ const m = [...document.querySelectorAll('circle.marker')]
                .find(m => m.dataset.country === {});
                if (!m) return null;
                return [Number(m.getAttribute('cx')) / 1000 * 360 - 180,
                        90 - Number(m.getAttribute('cy')) / 500 * 180]; }})()",
            json!(country)
        ))
        .unwrap()
}

#[test]
fn the_map_of_dbip_data_in_the_flat_layout_shows_both_families_and_credits_dbip() {
    let site = Site::start(Databases::TestFlat);
    site.visit(LONDON.probe, "london-1", "/blog/post", None);
    site.visit(SAN_DIEGO.probe, "san-diego-1", "/", Some("bob"));

    let mut browser = site.browser();
    browser.goto(&site.url("/map")).unwrap();
    let places = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const places = {};
                return places.includes('London, United Kingdom')
                    && places.includes('San Diego, United States')
                    && document.querySelectorAll('circle.marker').length === 2
                    && places; }})()",
            texts("table.map-list td.place")
        ),
    );
    assert_eq!(strings(&places).len(), 2, "{places}");
    let summary = browser
        .eval("document.querySelector('.map-summary').textContent")
        .unwrap();
    assert!(
        summary.as_str().unwrap().contains(testdb::FLAT_DESCRIPTION),
        "{summary}"
    );
    assert_eq!(browser.eval(CREDIT).unwrap(), dbip_credit());
    assert_eq!(browser.eval(NOTHING_INLINE).unwrap(), true);
    screenshot(&mut browser, "map-flat.png");

    // The dashboard's map carries the credit too.
    browser.goto(&site.url("/")).unwrap();
    site.wait(
        &mut browser,
        "document.querySelectorAll('#map circle.marker').length === 2
            && !document.querySelector('#map .map-attribution').hidden",
    );
    assert_eq!(browser.eval(CREDIT).unwrap(), dbip_credit());
    assert_eq!(browser.eval(NOTHING_INLINE).unwrap(), true);
}

#[test]
fn the_map_with_dbip_city_lite_shows_well_known_addresses_in_their_countries() {
    let site = Site::start(Databases::Dbip);
    for (n, known) in dbip::WELL_KNOWN.iter().enumerate() {
        site.visit(known.ip, &format!("known-{n}"), "/", None);
    }

    let mut browser = site.browser();
    browser.goto(&site.url("/map")).unwrap();
    // RIPE's IPv4 and IPv6 addresses are both in Amsterdam: one marker for the two.
    let places = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const places = {};
                const markers = [...document.querySelectorAll('circle.marker')];
                return places.length === 3
                    && places.filter(p => p.endsWith(', United States')).length === 1
                    && places.filter(p => p.endsWith(', Netherlands')).length === 2
                    && markers.some(m => m.dataset.country === 'United States')
                    && markers.some(m => m.dataset.country === 'Netherlands')
                    && places; }})()",
            texts("table.map-list td.place")
        ),
    );
    println!("DB-IP City Lite places them in: {places}");
    let us = marker_of(&mut browser, "United States");
    let (lon, lat) = (us[0].as_f64().unwrap(), us[1].as_f64().unwrap());
    assert!(
        (-125.0..=-66.0).contains(&lon) && (24.0..=50.0).contains(&lat),
        "the US marker is drawn at {lon}, {lat}"
    );
    let nl = marker_of(&mut browser, "Netherlands");
    let (lon, lat) = (nl[0].as_f64().unwrap(), nl[1].as_f64().unwrap());
    assert!(
        (3.3..=7.3).contains(&lon) && (50.7..=53.6).contains(&lat),
        "the Dutch marker is drawn at {lon}, {lat}"
    );
    let counts = browser.eval(&texts("text.marker-count")).unwrap();
    assert_eq!(strings(&counts), ["2"], "{counts}");
    assert_eq!(browser.eval(CREDIT).unwrap(), dbip_credit());
    assert_eq!(browser.eval(NOTHING_INLINE).unwrap(), true);
    screenshot(&mut browser, "map-dbip.png");
}

#[test]
fn the_live_page_shows_a_new_visitor_without_reloading() {
    let site = Site::with_geoip();
    site.visit(LONDON.probe, "london-1", "/", Some("alice"));

    let mut browser = site.browser();
    browser.goto(&site.url("/live")).unwrap();
    site.wait(
        &mut browser,
        "document.querySelectorAll('#visitors tr[data-key]').length === 1
            && document.querySelector('.feed-status').classList.contains('live')",
    );
    let loaded_at = browser.eval("window.__loadedAt").unwrap();
    assert!(loaded_at.is_number(), "{loaded_at}");
    assert_eq!(
        strings(&browser.eval(&texts("[data-count=visitors]")).unwrap()),
        ["1"]
    );

    site.visit(MILTON.probe, "milton-1", "/shop/cart", Some("carol"));
    let addresses = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const a = {}; return a.includes({}) && a; }})()",
            texts("#visitors tr[data-key] td.addr"),
            json!(MILTON.probe)
        ),
    );
    // Newest first.
    assert_eq!(strings(&addresses), [MILTON.probe, LONDON.probe]);
    let row = strings(
        &browser
            .eval(&texts("#visitors tr[data-key]:first-child td"))
            .unwrap(),
    );
    assert_eq!(
        row[..4],
        [MILTON.probe, "carol", "/shop/cart", "1"],
        "{row:?}"
    );
    site.wait(
        &mut browser,
        "document.querySelector('[data-count=visitors]').textContent === '2'",
    );

    // A further page view of a visitor already listed updates its row in place.
    site.visit(LONDON.probe, "london-1", "/about", Some("alice"));
    let row = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const r = {}; return r[2] === '/about' && r; }})()",
            texts("#visitors tr[data-key]:first-child td")
        ),
    );
    assert_eq!(strings(&row)[..4], [LONDON.probe, "alice", "/about", "2"]);
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#visitors tr[data-key]').length")
            .unwrap(),
        2
    );

    assert_eq!(
        browser.eval("window.__loadedAt").unwrap(),
        loaded_at,
        "the page was reloaded instead of updated"
    );
    screenshot(&mut browser, "live.png");

    // In a phone's width the page still fits: the table scrolls inside its box, not the page.
    browser.set_window(390, 844).unwrap();
    let overflow = site.wait(
        &mut browser,
        "window.innerWidth === 390 && document.documentElement.scrollWidth",
    );
    assert!(
        overflow.as_u64().unwrap() <= 390,
        "the page is {overflow} px wide"
    );
    screenshot_of_width(&mut browser, "live-narrow.png", 390);
}

#[test]
fn without_a_geoip_database_the_map_says_so_and_still_lists_visitors() {
    let site = Site::without_geoip();
    site.visit(LONDON.probe, "london-1", "/pricing", None);

    let mut browser = site.browser();
    browser.goto(&site.url("/map")).unwrap();
    let notice = site.wait(
        &mut browser,
        "(() => { const n = document.querySelector('.map-notice');
            return !n.hidden && n.textContent; })()",
    );
    let notice = notice.as_str().unwrap();
    assert!(notice.contains("No GeoIP database"), "{notice}");
    assert!(
        notice.contains("--geoip-db /path/to/GeoLite2-City.mmdb"),
        "{notice}"
    );
    let addresses = site.wait(&mut browser, &texts("table.map-list td.addr"));
    assert_eq!(strings(&addresses), [LONDON.probe]);
    assert_eq!(
        strings(&browser.eval(&texts("table.map-list td.place")).unwrap()),
        ["unknown"]
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('circle.marker').length")
            .unwrap(),
        0
    );
    screenshot(&mut browser, "map-without-geoip.png");
}

/// Where a page sends a browser without the cookie: a redirect to the login page, or 401.
fn refused(response: &Response) -> bool {
    response.status == 401
        || ((300..400).contains(&response.status)
            && response
                .header("location")
                .is_some_and(|l| l.starts_with("/login")))
}

#[test]
fn pages_need_the_login_and_a_wrong_token_does_not_log_in() {
    let site = Site::without_geoip();
    for page in ["/", "/live", "/map", "/admin"] {
        let response = site.send(Request::get(page));
        assert!(
            refused(&response),
            "{page} without login answered {} {:?}",
            response.status,
            response.headers
        );
    }
    assert_eq!(site.send(Request::get("/v1/bans")).status, 401);
    assert_eq!(
        site.send(Request::get("/v1/bans").bearer("not-the-admin-token"))
            .status,
        401
    );

    let wrong = site.send(
        Request::post("/login")
            .header("Origin", &site.url(""))
            .form(&[("token", "not-the-admin-token")]),
    );
    assert_eq!(session_cookie(&wrong), None, "{:?}", wrong.headers);
    assert!(
        !((300..400).contains(&wrong.status) && wrong.header("location") == Some("/")),
        "a wrong token was let in: {} {:?}",
        wrong.status,
        wrong.headers
    );

    let right = site.send(
        Request::post("/login")
            .header("Origin", &site.url(""))
            .form(&[("token", ADMIN_TOKEN)]),
    );
    assert!((300..400).contains(&right.status), "{}", right.status);
    assert_eq!(right.header("location"), Some("/"));
    let cookie = session_cookie(&right).expect("the login sets the session cookie");
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the cookie must not hold the token: {cookie}"
    );
    let map = site.send(Request::get("/map").header("Cookie", &cookie));
    assert_eq!(map.status, 200);
    assert!(map.text().contains("/assets/map-page.js"));
    let assets = site.send(Request::get("/assets/common.js"));
    assert_eq!(assets.status, 200, "assets need no login");

    // In the browser: a wrong token leaves it on the login page, says so, and opens nothing.
    let mut browser = Browser::launch(site.topology.server()).expect("chromium");
    browser.goto(&site.url("/login")).unwrap();
    browser
        .eval(
            "document.querySelector('input[name=token]').value = 'not-the-admin-token';
             document.querySelector('form[action=\"/login\"]').submit();",
        )
        .unwrap();
    let said = site.wait(
        &mut browser,
        "(() => { const e = document.querySelector('[role=alert], #login-error');
            return document.readyState === 'complete' && e && e.textContent.trim(); })()",
    );
    assert!(!said.as_str().unwrap().is_empty());
    assert!(
        browser
            .eval("document.querySelector('input[name=token]') !== null")
            .unwrap()
            .as_bool()
            .unwrap(),
        "the login form is shown again"
    );
    let status = browser
        .eval("fetch('/v1/bans').then(r => r.status)")
        .unwrap();
    assert_eq!(status, 401);
}

#[test]
fn the_dashboard_shows_counts_busiest_pages_the_feed_and_a_map() {
    let site = Site::with_geoip();
    site.visit(LONDON.probe, "london-1", "/pricing", Some("alice"));
    site.visit(LINKOPING.probe, "linkoping-1", "/pricing", None);
    site.visit(MILTON.probe, "milton-1", "/", None);

    // The login lands on the dashboard.
    let mut browser = site.browser();
    let counts = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const c = {}; return c[0] === '3' && c; }})()",
            texts("[data-count]")
        ),
    );
    assert_eq!(
        strings(&counts),
        ["3", "1", "2"],
        "visitors, logged in, guests"
    );
    let busiest = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const r = {}; return r.length === 3 && r; }})()",
            texts("#pages tbody tr:first-child td")
        ),
    );
    assert_eq!(strings(&busiest), ["/pricing", "2", "1"]);
    site.wait(
        &mut browser,
        "document.querySelectorAll('#feed li.visit').length === 3
            && document.querySelectorAll('#map circle.marker').length === 3
            && document.querySelector('.feed-status').classList.contains('live')",
    );
    let loaded_at = browser.eval("window.__loadedAt").unwrap();

    site.visit(SAN_DIEGO.probe, "san-diego-1", "/docs", Some("dan"));
    let newest = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const f = {}; return f.length === 4 && f[0]; }})()",
            texts("#feed li.visit")
        ),
    );
    let newest = newest.as_str().unwrap();
    assert!(
        newest.contains(SAN_DIEGO.probe) && newest.contains("dan") && newest.contains("/docs"),
        "{newest}"
    );
    site.wait(
        &mut browser,
        "document.querySelector('[data-count=visitors]').textContent === '4'
            && document.querySelectorAll('#map circle.marker').length === 4",
    );
    assert_eq!(browser.eval("window.__loadedAt").unwrap(), loaded_at);
    screenshot(&mut browser, "dashboard.png");
}

/// A script that fills the fields of the form `#<form>` and submits it as a person would.
fn submit(form: &str, fields: &[(&str, &str)]) -> String {
    let fill: String = fields
        .iter()
        .map(|(name, value)| format!("f.elements[{}].value = {};", json!(name), json!(value)))
        .collect();
    format!(
        "(() => {{ const f = document.getElementById({}); {fill} f.requestSubmit(); return true; }})()",
        json!(form)
    )
}

#[test]
fn the_admin_page_bans_and_lifts_bans_and_says_when_force_is_needed() {
    let site = Site::without_geoip();
    let mut browser = site.browser();
    browser.goto(&site.url("/admin")).unwrap();
    site.wait(
        &mut browser,
        "document.querySelector('#bans tbody tr') !== null",
    );

    browser
        .eval(&submit(
            "add-ban",
            &[
                ("networks", "198.51.100.0/24, 203.0.113.7"),
                ("reason", "scraping"),
                ("ttl", "2h"),
            ],
        ))
        .unwrap();
    let listed = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const n = {}; return n.length === 2 && n.sort(); }})()",
            texts("#bans tbody td.code")
        ),
    );
    assert_eq!(strings(&listed), ["198.51.100.0/24", "203.0.113.7/32"]);
    // The agent holds what the page shows.
    let bans: Value =
        serde_json::from_str(&site.agent.cli_ok(["ban", "ls", "--json"])).expect("ban ls JSON");
    let bans = bans["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 2, "{bans:?}");
    for ban in bans {
        assert_eq!(ban["reason"], "scraping", "{ban}");
        assert_eq!(ban["source"], "web", "{ban}");
        let left = ban["expires_in_secs"].as_u64().unwrap();
        assert!((7000..=7200).contains(&left), "{ban}");
    }

    // Banning everything needs force: the page shows the agent's reason and points at it.
    browser
        .eval(&submit("add-ban", &[("networks", "0.0.0.0/0")]))
        .unwrap();
    let said = site.wait(
        &mut browser,
        "(() => { const m = document.querySelector('#bans .message.error');
            return m && m.textContent; })()",
    );
    assert!(said.as_str().unwrap().contains("force"), "{said}");
    assert_eq!(
        browser.eval("document.activeElement.name").unwrap(),
        "force"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#bans tbody td.code').length")
            .unwrap(),
        2
    );

    // Each row's button lifts its ban.
    browser
        .eval(
            "[...document.querySelectorAll('#bans tbody tr')]
                .find(tr => tr.querySelector('td.code').textContent === '203.0.113.7/32')
                .querySelector('button').click()",
        )
        .unwrap();
    let left = site.wait(
        &mut browser,
        &format!(
            "(() => {{ const n = {}; return n.length === 1 && n; }})()",
            texts("#bans tbody td.code")
        ),
    );
    assert_eq!(strings(&left), ["198.51.100.0/24"]);
    let out = site.agent.cli_ok(["ban", "ls", "--json"]);
    assert!(!out.contains("203.0.113.7"), "{out}");
    screenshot(&mut browser, "admin.png");
}

/// The text of the ban table's page counter.
const PAGE_INFO: &str = "document.querySelector('#bans .page-info').textContent";

#[test]
fn the_admin_page_searches_and_pages_a_million_bans() {
    let site = Site::without_geoip();
    let list = site.agent.dir().join("million.txt");
    {
        use std::io::Write as _;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&list).unwrap());
        for i in 0..1_000_000u32 {
            let address = std::net::Ipv4Addr::from(0x6440_0000 + i);
            if i % 100_000 == 7 {
                writeln!(file, "{address} ; Scraper wave {}", i / 100_000).unwrap();
            } else {
                writeln!(file, "{address}").unwrap();
            }
        }
    }
    site.agent.cli_ok([
        "ban",
        "sync",
        "--file",
        list.to_str().unwrap(),
        "--source",
        "million",
    ]);

    let mut browser = site.browser();
    let started = Instant::now();
    browser.goto(&site.url("/admin")).unwrap();
    let info = site.wait(
        &mut browser,
        &format!("(() => {{ const t = {PAGE_INFO}; return t.includes('of 1,000,000') && t; }})()"),
    );
    println!(
        "the admin page showed its first page of 1,000,000 bans {:?} after it was asked for",
        started.elapsed()
    );
    assert_eq!(info, "1–100 of 1,000,000");
    let first_column = format!("{}.slice(0, 3)", texts("#bans tbody td.code"));
    assert_eq!(
        strings(&browser.eval(&first_column).unwrap()),
        ["100.64.0.0/32", "100.64.0.1/32", "100.64.0.2/32"]
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#bans tbody tr').length")
            .unwrap(),
        100
    );

    // Pages forward and back, without counting from the start.
    let page_shows = |browser: &mut Browser, text: &str| {
        site.wait(
            browser,
            &format!("(() => {{ const t = {PAGE_INFO}; return t === {text:?} && t; }})()"),
        )
    };
    browser
        .eval("document.querySelector('#bans [data-page=next]').click()")
        .unwrap();
    page_shows(&mut browser, "101–200 of 1,000,000");
    assert_eq!(
        strings(&browser.eval(&first_column).unwrap())[0],
        "100.64.0.100/32"
    );
    browser
        .eval("document.querySelector('#bans [data-page=previous]').click()")
        .unwrap();
    page_shows(&mut browser, "1–100 of 1,000,000");

    // Searching asks the agent, which filters all million.
    let search = |fields: &[(&str, &str)]| {
        let set: String = fields
            .iter()
            .map(|(name, value)| format!("f.elements[{name:?}].value = {value:?};"))
            .collect();
        format!(
            "(() => {{ const f = document.getElementById('search-bans'); {set} f.requestSubmit(); }})()"
        )
    };
    browser
        .eval(&search(&[
            ("contains", "100.67.4.9"),
            ("q", ""),
            ("source", ""),
        ]))
        .unwrap();
    page_shows(&mut browser, "1–1 of 1");
    assert_eq!(
        strings(&browser.eval(&texts("#bans tbody td.code")).unwrap()),
        ["100.67.4.9/32"]
    );
    browser
        .eval(&search(&[
            ("contains", ""),
            ("q", "scraper WAVE"),
            ("source", "million"),
        ]))
        .unwrap();
    page_shows(&mut browser, "1–10 of 10");
    let reasons = browser
        .eval("[...document.querySelectorAll('#bans tbody td.clip')].map(td => td.textContent)")
        .unwrap();
    assert_eq!(strings(&reasons).len(), 10);
    assert!(
        strings(&reasons)
            .iter()
            .all(|r| r.starts_with("Scraper wave")),
        "{reasons}"
    );
    screenshot(&mut browser, "admin-million.png");
}

#[test]
fn the_dashboard_shows_the_fleet_and_the_host_whose_tables_are_full() {
    let postgres = tracking_agent::store::postgres::test_server::Dedicated::start();
    let url = postgres.database("dashboard");
    let site = Site::start_with(Databases::None, Some(&url), &["--fleet-heartbeat", "1s"]);
    let _small = tests::site::Site::with_options(|o| {
        o.database(&url)
            .args(["--fleet-heartbeat", "1s", "--max-bans-v4", "1"])
    });
    site.agent
        .cli_ok(["ban", "add", "198.51.100.1", "198.51.100.2"]);

    let mut browser = site.browser();
    let rows = site.wait(
        &mut browser,
        "(() => { const s = document.getElementById('fleet');
            const rows = [...s.querySelectorAll('tbody tr')].map(tr => tr.textContent);
            return !s.hidden && rows.length === 2 && rows.some(r => r.includes('full')) && rows; })()",
    );
    let rows = strings(&rows);
    assert!(
        rows.iter()
            .any(|r| r.contains("(this one)") && r.ends_with("ok")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("full (1 not enforced)") && r.contains("1 / ")),
        "{rows:?}"
    );
    let summary = browser
        .eval("document.querySelector('#fleet .fleet-summary').textContent")
        .unwrap();
    assert!(
        summary.as_str().unwrap().starts_with("This host applied"),
        "{summary}"
    );
    screenshot(&mut browser, "dashboard-fleet.png");
}
