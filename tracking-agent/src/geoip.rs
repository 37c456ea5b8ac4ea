//! [`GeoIp`]: where an address is, from a MaxMind DB City database (GeoLite2-City, GeoIP2-City,
//! or any file in their layout) read into memory once, for the map of active visitors.
//!
//! - [`testdb`] (for tests here and in the `tests` crate): a City database of our own for tests,
//!   written by [`mmdb`], a writer of the MaxMind DB format.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, UNIX_EPOCH},
};

use maxminddb::{MaxMindDbError, Reader};
use serde::{Deserialize, Serialize};

pub mod mmdb;
pub mod testdb;

/// How many addresses [`GeoIp::locate`] remembers. Active visitors are looked up again on every
/// refresh of the map, and are far fewer than this; when it fills up it starts over, which
/// costs one decode per address and keeps memory bounded whatever the traffic.
const CACHE_CAPACITY: usize = 4096;

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
        "{} is not a MaxMind DB file (such as GeoLite2-City.mmdb): {source}",
        path.display()
    )]
    Format {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
}

/// An open City database. Cheap to share behind an `Arc`: lookups take `&self`.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
    /// For log messages: which file an odd record came from.
    path: PathBuf,
    /// Recent answers, including "unknown", by address.
    cache: Mutex<HashMap<IpAddr, Option<Location>>>,
}

impl GeoIp {
    /// Reads the database at `path` into memory and checks its metadata.
    pub fn open(path: impl AsRef<Path>) -> Result<GeoIp, GeoIpError> {
        let path = path.as_ref().to_owned();
        let bytes = std::fs::read(&path).map_err(|source| GeoIpError::Read {
            path: path.clone(),
            source,
        })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoIpError::Format {
            path: path.clone(),
            source,
        })?;
        let kind = &reader.metadata().database_type;
        // Country and ASN databases open fine but hold no coordinates: say why the map stays
        // empty instead of refusing a file that is valid.
        if !kind.contains("City") && !kind.contains("Enterprise") {
            tracing::warn!(
                "{}: a {kind} database has no city coordinates; the map needs a City database \
                 such as GeoLite2-City",
                path.display()
            );
        }
        Ok(GeoIp {
            reader,
            path,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The database type and build date, e.g. `GeoLite2-City 2026-11-20`.
    pub fn describe(&self) -> String {
        let metadata = self.reader.metadata();
        let built = UNIX_EPOCH + Duration::from_secs(metadata.build_epoch);
        let built = humantime::format_rfc3339_seconds(built).to_string();
        let date = built.get(..10).unwrap_or(&built);
        format!("{} {date}", metadata.database_type)
    }

    /// The file the database was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `ip` is; `None` when the database does not know it (private ranges, for one) or
    /// knows it without coordinates.
    pub fn locate(&self, ip: IpAddr) -> Option<Location> {
        // Dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        if let Some(known) = self.cache().get(&ip) {
            return known.clone();
        }
        let found = self.lookup(ip);
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

    fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let decoded = self
            .reader
            .lookup(ip)
            .and_then(|found| found.decode::<CityRecord>());
        match decoded {
            Ok(record) => record?.into_location(),
            // An IPv6 address in an IPv4-only database is simply unknown.
            Err(MaxMindDbError::InvalidInput { .. }) => None,
            Err(error) => {
                tracing::warn!(
                    "{}: cannot decode the record of {ip}: {error}",
                    self.path.display()
                );
                None
            }
        }
    }
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field("path", &self.path)
            .field("database", &self.describe())
            .finish_non_exhaustive()
    }
}

/// The fields of a GeoIP2-City record the map shows; the decoder skips the others.
#[derive(Deserialize)]
struct CityRecord {
    #[serde(default)]
    city: Option<Named>,
    #[serde(default)]
    country: Option<Country>,
    #[serde(default)]
    location: Option<Coordinates>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    names: Names,
}

#[derive(Default, Deserialize)]
struct Names {
    en: Option<String>,
}

#[derive(Deserialize)]
struct Country {
    iso_code: Option<String>,
    #[serde(default)]
    names: Names,
}

#[derive(Deserialize)]
struct Coordinates {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl CityRecord {
    fn into_location(self) -> Option<Location> {
        let coordinates = self.location?;
        let (country, country_code) = match self.country {
            Some(country) => (country.names.en, country.iso_code),
            None => (None, None),
        };
        Some(Location {
            latitude: coordinates.latitude?,
            longitude: coordinates.longitude?,
            city: self.city.and_then(|city| city.names.en),
            country,
            country_code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{
        testdb::{LINKOPING, LONDON, MILTON, Place, SAN_DIEGO},
        *,
    };

    fn open_test_database() -> (tempfile::TempDir, GeoIp) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoIP2-City-Test.mmdb");
        testdb::write_city_database(&path).unwrap();
        let geoip = GeoIp::open(&path).unwrap();
        (dir, geoip)
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
        let (_dir, geoip) = open_test_database();
        for place in [LONDON, LINKOPING, MILTON, SAN_DIEGO] {
            assert_eq!(
                geoip.locate(ip(place.probe)),
                Some(expected(&place)),
                "{}",
                place.probe
            );
        }
        let london = geoip.locate(ip("81.2.69.142")).unwrap();
        assert_eq!(london.city.as_deref(), Some("London"));
        assert_eq!(london.country.as_deref(), Some("United Kingdom"));
        assert_eq!(london.country_code.as_deref(), Some("GB"));
        assert_eq!((london.latitude, london.longitude), (51.5142, -0.0931));
    }

    #[test]
    fn every_address_of_a_network_is_where_the_network_is() {
        let (_dir, geoip) = open_test_database();
        assert_eq!(
            geoip.locate(ip("81.2.69.1")).unwrap().city.as_deref(),
            Some("London")
        );
        assert_eq!(
            geoip
                .locate(ip("2001:480:10:ffff::9"))
                .unwrap()
                .city
                .as_deref(),
            Some("San Diego")
        );
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_located_as_its_ipv4_address() {
        let (_dir, geoip) = open_test_database();
        assert_eq!(
            geoip.locate(ip("::ffff:89.160.20.112")),
            Some(expected(&LINKOPING))
        );
    }

    #[test]
    fn a_network_known_only_to_its_country_has_no_city() {
        let (_dir, geoip) = open_test_database();
        let japan = geoip.locate(ip(testdb::JAPAN.probe)).unwrap();
        assert_eq!(japan.city, None);
        assert_eq!(japan.country.as_deref(), Some("Japan"));
        assert_eq!(japan.country_code.as_deref(), Some("JP"));
    }

    #[test]
    fn addresses_outside_every_network_are_not_located() {
        let (_dir, geoip) = open_test_database();
        for unknown in [
            testdb::UNKNOWN,
            "10.0.0.1",
            "127.0.0.1",
            "::1",
            "fd00::1",
            "81.2.70.1",
        ] {
            assert_eq!(geoip.locate(ip(unknown)), None, "{unknown}");
        }
    }

    #[test]
    fn repeated_lookups_give_the_same_answer() {
        let (_dir, geoip) = open_test_database();
        for _ in 0..3 {
            assert_eq!(geoip.locate(ip(LONDON.probe)), Some(expected(&LONDON)));
            assert_eq!(geoip.locate(ip(testdb::UNKNOWN)), None);
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        let (_dir, geoip) = open_test_database();
        for n in 0..(CACHE_CAPACITY as u32 + 10) {
            geoip.locate(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
        }
        assert!(geoip.cache().len() <= CACHE_CAPACITY);
        assert_eq!(geoip.locate(ip(MILTON.probe)), Some(expected(&MILTON)));
    }

    #[test]
    fn the_description_is_the_database_type_and_build_date() {
        let (_dir, geoip) = open_test_database();
        assert_eq!(geoip.describe(), "GeoIP2-City-Test 2026-11-20");
        assert_eq!(geoip.describe(), testdb::DESCRIPTION);
    }

    #[test]
    fn a_location_serializes_as_the_map_api_shows_it() {
        let (_dir, geoip) = open_test_database();
        let json = serde_json::to_value(geoip.locate(ip(LONDON.probe)).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"latitude": 51.5142, "longitude": -0.0931, "city": "London",
                "country": "United Kingdom", "country_code": "GB"})
        );
    }

    #[test]
    fn a_file_that_is_not_a_maxmind_database_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-database.mmdb");
        std::fs::write(&path, "this is a text file\n".repeat(100)).unwrap();
        let error = GeoIp::open(&path).unwrap_err();
        assert!(matches!(error, GeoIpError::Format { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("is not a MaxMind DB file"), "{message}");
    }

    #[test]
    fn a_missing_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoLite2-City.mmdb");
        let error = GeoIp::open(&path).unwrap_err();
        assert!(matches!(error, GeoIpError::Read { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
}
