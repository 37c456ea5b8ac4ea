//! The two ways a city database lays out its records, told apart by the file's metadata, and
//! how a record of each becomes a [`Location`].
//!
//! - MaxMind's (GeoLite2-City, GeoIP2-City, and DB-IP's own Lite MMDB, which follows it): nested
//!   maps, names by language, `database_type` like `GeoLite2-City`.
//! - ip-location-db's flat one (its `dbip-city-mmdb` and `geolite2-city-mmdb` packages): one map
//!   of `country_code, state1, state2, city, postcode, latitude, longitude, timezone`, floats
//!   rather than doubles, empty strings for unknown fields, `database_type` like `city ipv4`.

use std::fmt;

use maxminddb::Metadata;
use serde::{Deserialize, Deserializer, de};

use super::{Location, countries};

/// How the records of a database are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    MaxMind,
    Flat,
}

impl Layout {
    /// The layout the metadata says, and whether its records have coordinates (a City
    /// database rather than a Country or ASN one).
    pub fn of(metadata: &Metadata) -> (Layout, bool) {
        let kind = &metadata.database_type;
        // ip-location-db writes `<what> ipv4` and `<what> ipv6`, lower case; MaxMind and DB-IP
        // write product names (`GeoIP2-City`, `DBIP-City-Lite`).
        match kind.split_once(' ') {
            Some((what, "ipv4" | "ipv6")) if !what.contains(' ') => (Layout::Flat, what == "city"),
            _ => (
                Layout::MaxMind,
                kind.contains("City") || kind.contains("Enterprise"),
            ),
        }
    }

    /// Decodes the record found for an address.
    pub fn decode<S: AsRef<[u8]>>(
        self,
        found: &maxminddb::LookupResult<'_, S>,
    ) -> Result<Option<Location>, maxminddb::MaxMindDbError> {
        Ok(match self {
            Layout::MaxMind => found
                .decode::<CityRecord>()?
                .and_then(CityRecord::into_location),
            Layout::Flat => found
                .decode::<FlatRecord>()?
                .and_then(FlatRecord::into_location),
        })
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::MaxMind => "MaxMind City",
            Layout::Flat => "ip-location-db flat",
        })
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
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

impl CityRecord {
    fn into_location(self) -> Option<Location> {
        let coordinates = self.location?;
        let (country, country_code) = match self.country {
            Some(country) => (country.names.en, country.iso_code),
            None => (None, None),
        };
        Some(Location {
            latitude: coordinates.latitude?.0,
            longitude: coordinates.longitude?.0,
            city: self.city.and_then(|city| city.names.en),
            country,
            country_code,
        })
    }
}

/// The fields of an ip-location-db record the map shows.
#[derive(Deserialize)]
struct FlatRecord<'a> {
    #[serde(default, borrow)]
    country_code: Option<&'a str>,
    #[serde(default, borrow)]
    city: Option<&'a str>,
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

impl FlatRecord<'_> {
    fn into_location(self) -> Option<Location> {
        // ip-location-db writes an empty string for what it does not know.
        fn known(s: Option<&str>) -> Option<&str> {
            s.filter(|s| !s.is_empty())
        }
        let country_code = known(self.country_code);
        Some(Location {
            latitude: self.latitude?.0,
            longitude: self.longitude?.0,
            city: known(self.city).map(str::to_owned),
            country: country_code
                .and_then(countries::english_name)
                .map(str::to_owned),
            country_code: country_code.map(str::to_owned),
        })
    }
}

/// A latitude or longitude. MaxMind stores doubles; ip-location-db stores 32-bit floats, which
/// are read back as the decimal they were written from (`37.422`, not `37.42200088500977`).
struct Degrees(f64);

impl<'de> Deserialize<'de> for Degrees {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Degrees, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Degrees;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("degrees as a number")
            }

            fn visit_f32<E: de::Error>(self, x: f32) -> Result<Degrees, E> {
                // The shortest decimal that reads back as this f32 is what was written.
                Ok(Degrees(x.to_string().parse().unwrap_or(f64::from(x))))
            }

            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Degrees, E> {
                Ok(Degrees(x))
            }

            fn visit_i64<E: de::Error>(self, x: i64) -> Result<Degrees, E> {
                Ok(Degrees(x as f64))
            }

            fn visit_u64<E: de::Error>(self, x: u64) -> Result<Degrees, E> {
                Ok(Degrees(x as f64))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn metadata(database_type: &str) -> Metadata {
        Metadata {
            binary_format_major_version: 2,
            binary_format_minor_version: 0,
            build_epoch: 0,
            database_type: database_type.to_owned(),
            description: BTreeMap::new(),
            ip_version: 6,
            languages: Vec::new(),
            node_count: 0,
            record_size: 24,
        }
    }

    #[test]
    fn maxmind_and_dbip_product_names_are_the_maxmind_layout() {
        for kind in [
            "GeoLite2-City",
            "GeoIP2-City",
            "GeoIP2-City-Test",
            "DBIP-City-Lite",
            "GeoIP2-Enterprise",
        ] {
            assert_eq!(
                Layout::of(&metadata(kind)),
                (Layout::MaxMind, true),
                "{kind}"
            );
        }
        for kind in ["GeoLite2-Country", "GeoLite2-ASN", "DBIP-Country-Lite"] {
            assert_eq!(
                Layout::of(&metadata(kind)),
                (Layout::MaxMind, false),
                "{kind}"
            );
        }
    }

    #[test]
    fn ip_location_db_names_are_the_flat_layout() {
        assert_eq!(Layout::of(&metadata("city ipv4")), (Layout::Flat, true));
        assert_eq!(Layout::of(&metadata("city ipv6")), (Layout::Flat, true));
        assert_eq!(Layout::of(&metadata("country ipv4")), (Layout::Flat, false));
        assert_eq!(Layout::of(&metadata("asn ipv6")), (Layout::Flat, false));
        // Not ip-location-db's naming: taken for MaxMind's layout, as before.
        assert_eq!(
            Layout::of(&metadata("my city ipv4")),
            (Layout::MaxMind, false)
        );
        assert_eq!(Layout::of(&metadata("city ipv5")), (Layout::MaxMind, false));
    }

    #[test]
    fn a_float_reads_back_as_the_decimal_it_was_written_from() {
        use serde::de::{IntoDeserializer, value::Error};
        let read = |x: f32| Degrees::deserialize(x.into_deserializer()).map(|d: Degrees| d.0);
        assert_eq!(read(37.422_f32), Ok::<_, Error>(37.422));
        assert_eq!(read(-122.085_f32), Ok(-122.085));
        let double: Result<Degrees, Error> = Degrees::deserialize(51.5142_f64.into_deserializer());
        assert_eq!(double.unwrap().0, 51.5142);
    }
}
