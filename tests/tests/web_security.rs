//! The pages hold against other sites and guessing: strict headers, no change made through a
//! logged-in browser from another site's page, no framing, sessions that logging out revokes
//! and that expire, a limit on wrong tokens. With the real agent (its daemon in this process)
//! and a headless Chromium in a network namespace; needs root.

use std::{thread, time::Duration};

use serde_json::json;
use tests::{
    http::{OtherSite, Request},
    web::{ADMIN_TOKEN, SHOWS, WebSite, session_cookie},
};

#[test]
fn every_answer_carries_headers_that_keep_the_pages_to_themselves() {
    let site = WebSite::in_process(&[]);
    let cookie = site.session();
    for path in [
        "/",
        "/live",
        "/map",
        "/admin",
        "/login",
        "/v1/bans",
        "/assets/common.js",
    ] {
        let response = site.send(Request::get(path).header("Cookie", &cookie));
        assert_eq!(response.status, 200, "{path}");
        let csp = response
            .header("content-security-policy")
            .unwrap_or_default();
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(response.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            response.header("referrer-policy"),
            Some("same-origin"),
            "{path}"
        );
    }
}

#[test]
fn the_pages_run_under_their_policy_without_a_single_violation() {
    let site = WebSite::in_process(&[]);
    site.visit(json!({"ip": "192.0.2.10", "session_key": "s1", "url": "/pricing"}));
    let mut browser = site.browser();
    for path in ["/", "/live", "/map", "/admin"] {
        browser.goto(&site.url(path)).unwrap();
        // Let the page's scripts fetch and draw.
        thread::sleep(Duration::from_millis(700));
        let violations = browser.csp_violations().unwrap();
        assert!(violations.is_empty(), "{path}: {violations:?}");
    }
}

#[test]
fn another_sites_form_cannot_ban_through_a_logged_in_browser() {
    let site = WebSite::in_process(&[]);
    let mut browser = site.browser();
    // A page on another port of the same host: same site for the cookie, another origin.
    let attack = format!(
        r#"<!doctype html><body>
        <form id=f method=post enctype=text/plain action="{}">
          <input name="192.0.2.66 ;" value="forged">
        </form>
        <script>addEventListener('load', () => setTimeout(() => document.getElementById('f').submit(), 50));</script>"#,
        site.url("/v1/bans/sync?source=forged")
    );
    let other = OtherSite::serve(site.topology.server(), attack).unwrap();
    browser.goto(&other.url()).unwrap();
    // The form posts and the browser shows the agent's answer.
    browser
        .wait_for(
            "location.href.includes('/v1/bans') && document.readyState === 'complete'",
            SHOWS,
        )
        .unwrap();
    let shown = browser.eval("document.body.innerText").unwrap();
    assert!(
        shown.as_str().unwrap_or("").contains("agent's own pages"),
        "the agent should refuse the forged request: {shown}"
    );
    assert!(
        site.bans().is_empty(),
        "a forged request banned: {:?}",
        site.bans()
    );
    // The same change from the agent's own page goes through.
    browser.goto(&site.url("/admin")).unwrap();
    let status = browser
        .eval(
            "fetch('/v1/bans', {method: 'POST', headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({networks: ['192.0.2.66']})}).then(r => r.status)",
        )
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(site.bans().len(), 1);
}

#[test]
fn another_site_cannot_frame_the_pages() {
    let site = WebSite::in_process(&[]);
    let mut browser = site.browser();
    let framing = format!(
        r#"<!doctype html><body><iframe src="{}" width=800 height=600></iframe>"#,
        site.url("/admin")
    );
    let other = OtherSite::serve(site.topology.server(), framing).unwrap();
    browser.goto(&other.url()).unwrap();
    thread::sleep(Duration::from_millis(700));
    let frames = browser.frame_urls().unwrap();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(
        frames.iter().any(|u| u.starts_with("chrome-error://")),
        "the admin page was shown inside another site's frame: {frames:?}"
    );
}

#[test]
fn logging_out_revokes_the_session_and_sessions_expire() {
    let site = WebSite::in_process(&["--session-lifetime", "3s"]);
    let cookie = site.session();
    let login = site.login(ADMIN_TOKEN);
    let set = login.header("set-cookie").unwrap_or_default();
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age=3"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(
        !set.contains(ADMIN_TOKEN),
        "the cookie holds the token: {set}"
    );
    assert_eq!(
        site.send(Request::get("/map").header("Cookie", &cookie))
            .status,
        200
    );

    // Logging out must come from the agent's origin too.
    let forged = site.send(Request::post("/logout").header("Cookie", &cookie));
    assert_eq!(forged.status, 403);
    let out = site.send(
        Request::post("/logout")
            .header("Cookie", &cookie)
            .header("Origin", &site.url("")),
    );
    assert!((300..400).contains(&out.status), "{}", out.status);
    let after = site.send(Request::get("/map").header("Cookie", &cookie));
    assert!(
        (300..400).contains(&after.status) && after.header("location") == Some("/login"),
        "a revoked session still opens pages: {}",
        after.status
    );
    assert_eq!(
        site.send(Request::get("/v1/bans").header("Cookie", &cookie))
            .status,
        401
    );

    let fresh = session_cookie(&login).unwrap();
    assert_eq!(
        site.send(Request::get("/map").header("Cookie", &fresh))
            .status,
        200
    );
    thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        site.send(Request::get("/v1/bans").header("Cookie", &fresh))
            .status,
        401,
        "a session outlived its lifetime"
    );
}

#[test]
fn a_login_over_https_sets_a_secure_cookie() {
    let site = WebSite::in_process(&[]);
    let host = site.http.to_string();
    let response = site.send(
        Request::post("/login")
            .header("Origin", &format!("https://{host}"))
            .form(&[("token", ADMIN_TOKEN)]),
    );
    let set = response.header("set-cookie").unwrap_or_default();
    assert!(set.contains("Secure"), "{set}");
}

#[test]
fn wrong_tokens_are_limited_per_address() {
    let site = WebSite::in_process(&[]);
    for attempt in 0..5 {
        assert_eq!(site.login("not-the-admin-token").status, 401, "{attempt}");
    }
    let limited = site.login("not-the-admin-token");
    assert_eq!(limited.status, 429);
    let wait: u64 = limited
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    // The right token waits too: guessing must not be able to tell.
    assert_eq!(site.login(ADMIN_TOKEN).status, 429);
    // A login without the agent's origin is refused before the token is looked at.
    let cross = site.send(Request::post("/login").form(&[("token", ADMIN_TOKEN)]));
    assert_eq!(cross.status, 403);
}
