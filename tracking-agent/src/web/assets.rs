//! The pages and their assets (`tracking-agent/web/`), embedded in the binary: the agent serves
//! them with no file to install and nothing fetched from anywhere else, so the pages work
//! offline and behind any firewall.
//!
//! - [`page`]: the HTML of `dashboard`, `live`, `map`, `admin` and `login`.
//! - [`asset`]: `/assets/<name>`: scripts (ES modules), the stylesheet, the world map and the icon.
//!
//! The world map is generated from Natural Earth data by `web/tools/world-svg.mjs`; see
//! `web/tools/README.md`.

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// `/assets/<name>`: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "style.css",
        CSS,
        include_bytes!("../../web/assets/style.css"),
    ),
    (
        "common.js",
        JS,
        include_bytes!("../../web/assets/common.js"),
    ),
    ("map.js", JS, include_bytes!("../../web/assets/map.js")),
    (
        "dashboard.js",
        JS,
        include_bytes!("../../web/assets/dashboard.js"),
    ),
    ("live.js", JS, include_bytes!("../../web/assets/live.js")),
    (
        "map-page.js",
        JS,
        include_bytes!("../../web/assets/map-page.js"),
    ),
    ("admin.js", JS, include_bytes!("../../web/assets/admin.js")),
    ("login.js", JS, include_bytes!("../../web/assets/login.js")),
    (
        "world.svg",
        SVG,
        include_bytes!("../../web/assets/world.svg"),
    ),
    (
        "favicon.svg",
        SVG,
        include_bytes!("../../web/assets/favicon.svg"),
    ),
];

/// What every page shares: its head (title, stylesheet, its one script) and body.
const LAYOUT: &str = include_str!("../../web/pages/layout.html");
/// The header with the navigation, on every page but the login.
const HEADER: &str = include_str!("../../web/pages/header.html");
/// The feed's state in the header, on the pages that follow the live feed.
const FEED_STATUS: &str = "  <span class=\"feed-status\" role=\"status\">connecting…</span>\n";

/// A page: its `<main>`, and what goes around it.
struct Page {
    name: &'static str,
    title: &'static str,
    script: &'static str,
    /// The header with the navigation (not on the login).
    header: bool,
    /// The feed's state in the header.
    feed: bool,
    main: &'static str,
}

const PAGES: &[Page] = &[
    Page {
        name: "dashboard",
        title: "Dashboard",
        script: "dashboard.js",
        header: true,
        feed: true,
        main: include_str!("../../web/pages/dashboard.html"),
    },
    Page {
        name: "live",
        title: "Live",
        script: "live.js",
        header: true,
        feed: true,
        main: include_str!("../../web/pages/live.html"),
    },
    Page {
        name: "map",
        title: "Map",
        script: "map-page.js",
        header: true,
        feed: true,
        main: include_str!("../../web/pages/map.html"),
    },
    Page {
        name: "admin",
        title: "Admin",
        script: "admin.js",
        header: true,
        feed: false,
        main: include_str!("../../web/pages/admin.html"),
    },
    Page {
        name: "login",
        title: "Log in",
        script: "login.js",
        header: false,
        feed: false,
        main: include_str!("../../web/pages/login.html"),
    },
];

impl Page {
    /// The whole HTML: a few kilobytes put together per request, which costs less than the
    /// request itself.
    fn html(&self) -> String {
        let header = if self.header {
            HEADER.replace("{status}", if self.feed { FEED_STATUS } else { "" })
        } else {
            String::new()
        };
        LAYOUT
            .replace("{title}", self.title)
            .replace("{script}", self.script)
            .replace("{header}", &header)
            .replace("{main}", self.main)
    }
}

/// The content type and bytes of `/assets/<name>`; `None` for any other name.
pub fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(known, _, _)| *known == name)
        .map(|&(_, content_type, bytes)| (content_type, bytes))
}

/// The HTML of a page: `dashboard`, `live`, `map`, `admin` or `login`.
pub fn page(name: &str) -> Option<String> {
    PAGES.iter().find(|page| page.name == name).map(Page::html)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page and asset as text (the assets are all text: scripts, CSS and SVG).
    fn texts() -> Vec<(String, String)> {
        let pages = PAGES
            .iter()
            .map(|page| (format!("page {}", page.name), page.html()));
        let assets = ASSETS.iter().map(|&(name, _, bytes)| {
            (
                format!("asset {name}"),
                std::str::from_utf8(bytes)
                    .expect("assets are UTF-8 text")
                    .to_owned(),
            )
        });
        pages.chain(assets).collect()
    }

    /// The `/assets/<name>` references in `text`.
    fn references(text: &str) -> Vec<&str> {
        text.match_indices("/assets/")
            .map(|(at, prefix)| {
                let rest = &text[at + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    #[test]
    fn every_page_named_in_the_api_exists() {
        for name in ["dashboard", "live", "map", "admin", "login"] {
            let html = page(name).unwrap_or_else(|| panic!("no page {name}"));
            assert!(html.starts_with("<!doctype html>"), "{name}");
        }
        assert_eq!(page("nope"), None);
    }

    #[test]
    fn every_page_is_one_document_with_the_navigation_where_it_belongs() {
        for page in PAGES {
            let html = page.html();
            assert!(!html.contains('{'), "{}: a placeholder is left", page.name);
            assert_eq!(html.matches("<main").count(), 1, "{}", page.name);
            assert_eq!(html.matches("</html>").count(), 1, "{}", page.name);
            assert_eq!(html.contains("<nav"), page.name != "login", "{}", page.name);
            assert_eq!(
                html.contains("feed-status"),
                ["dashboard", "live", "map"].contains(&page.name),
                "{}",
                page.name
            );
        }
    }

    #[test]
    fn every_page_has_the_stylesheet_and_its_own_script() {
        for (name, script) in [
            ("dashboard", "dashboard.js"),
            ("live", "live.js"),
            ("map", "map-page.js"),
            ("admin", "admin.js"),
            ("login", "login.js"),
        ] {
            let html = page(name).unwrap();
            assert!(html.contains(r#"href="/assets/style.css""#), "{name}");
            assert!(
                html.contains(&format!(r#"<script type="module" src="/assets/{script}">"#)),
                "{name}"
            );
        }
    }

    #[test]
    fn every_asset_a_page_or_script_refers_to_is_embedded() {
        for (what, text) in texts() {
            for name in references(&text) {
                assert!(asset(name).is_some(), "{what} refers to /assets/{name}");
            }
        }
    }

    #[test]
    fn nothing_is_fetched_from_another_site() {
        // The only URL allowed is the SVG namespace, which names a vocabulary and is never
        // fetched.
        for (what, text) in texts() {
            let without_namespace = text.replace("http://www.w3.org/2000/svg", "");
            for scheme in [
                "http:",
                "https:",
                "src=\"//",
                "href=\"//",
                "url(",
                "@import",
            ] {
                assert!(
                    !without_namespace.contains(scheme),
                    "{what} contains {scheme}"
                );
            }
        }
    }

    #[test]
    fn scripts_put_data_in_the_page_as_text_only() {
        // Visitor data (user agents, referrers, paths) comes from anyone on the internet.
        for (what, text) in texts().into_iter().filter(|(w, _)| w.ends_with(".js")) {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{what} uses {sink}");
            }
        }
    }

    #[test]
    fn pages_have_no_inline_scripts_so_a_strict_content_security_policy_fits() {
        for page in PAGES {
            let (name, html) = (page.name, page.html());
            assert_eq!(
                html.matches("<script").count(),
                html.matches("<script type=\"module\" src=").count(),
                "{name}"
            );
            assert!(!html.contains(" onclick="), "{name}");
            assert!(!html.contains(" style="), "{name}");
        }
    }

    #[test]
    fn assets_have_the_content_type_of_their_kind() {
        for &(name, content_type, _) in ASSETS {
            let expected = match name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("js") => JS,
                Some("css") => CSS,
                Some("svg") => SVG,
                other => panic!("{name}: unexpected extension {other:?}"),
            };
            assert_eq!(content_type, expected, "{name}");
        }
        assert_eq!(
            asset("common.js").unwrap().0,
            "text/javascript; charset=utf-8"
        );
    }

    #[test]
    fn names_outside_the_list_are_not_found() {
        for name in [
            "",
            "../Cargo.toml",
            "style.css/",
            "STYLE.CSS",
            "tools/world-svg.mjs",
        ] {
            assert_eq!(asset(name), None, "{name}");
        }
    }

    #[test]
    fn the_world_map_is_an_equirectangular_svg_of_modest_size() {
        let (_, bytes) = asset("world.svg").unwrap();
        let svg = std::str::from_utf8(bytes).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(r#"viewBox="0 0 1000 500""#));
        assert!(bytes.len() < 150 * 1024, "{} bytes", bytes.len());
    }
}
