//! `tracking ua import --bots`: the bot list as user-agent rules of source `bots`, listed and
//! removed together, leaving the rules added by hand alone; crawlers' visits are not
//! tracked while it is loaded, browsers' are.

use serde_json::{Value, json};
use tests::web::WebSite;

const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const AHREFS: &str = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

fn tracked(site: &WebSite, ip: &str, agent: &str) -> bool {
    let answer = site.visit(json!({"ip": ip, "user_agent": agent, "url": "/"}));
    assert_eq!(answer.status, 202, "{}", answer.text());
    answer.json()["tracked"].as_bool().unwrap()
}

fn rules(site: &WebSite, source: &str) -> Vec<Value> {
    serde_json::from_str(
        &site
            .agent
            .cli_ok(["ua", "ls", "--source", source, "--json"]),
    )
    .unwrap()
}

#[test]
fn the_bot_list_is_a_source_of_rules_imported_listed_and_removed_together() {
    let site = WebSite::start(&[]);
    site.agent.cli_ok(["ua", "add", "curl", "--note", "ours"]);
    assert!(tracked(&site, "192.0.2.1", GOOGLEBOT));

    let printed = site.agent.cli_ok(["ua", "import", "--bots"]);
    assert!(
        printed.starts_with("crawler-user-agents 1.60.0: "),
        "{printed}"
    );
    assert!(
        printed.contains("1 of its keywords were rules of another source already"),
        "{printed}"
    );
    let bots = rules(&site, "bots");
    assert!(bots.len() > 1000, "{}", bots.len());
    assert!(bots.iter().all(|r| r["source"] == "bots"));
    assert!(bots.iter().any(|r| r["keyword"] == "googlebot/"));
    // The rule added by hand stays the operator's.
    let ours = rules(&site, "cli");
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["keyword"], "curl");
    assert_eq!(ours[0]["note"], "ours");
    let table = site.agent.cli_ok(["ua", "ls"]);
    assert!(table.lines().next().unwrap().contains("SOURCE"), "{table}");

    assert!(!tracked(&site, "192.0.2.2", GOOGLEBOT));
    assert!(!tracked(&site, "192.0.2.3", AHREFS));
    assert!(tracked(&site, "192.0.2.4", CHROME));

    // Importing again changes nothing.
    let again = site.agent.cli_ok(["ua", "import", "--bots"]);
    assert!(
        again.contains(&format!(
            "{} rules of source bots (was {})",
            bots.len(),
            bots.len()
        )),
        "{again}"
    );

    let removed = site.agent.cli_ok(["ua", "rm", "--source", "bots"]);
    assert_eq!(
        removed,
        format!("removed {} rules of source bots\n", bots.len())
    );
    assert!(rules(&site, "bots").is_empty());
    assert_eq!(rules(&site, "cli").len(), 1);
    assert!(tracked(&site, "192.0.2.5", GOOGLEBOT));
    assert!(!tracked(&site, "192.0.2.6", "curl/8.4.0"));
    assert_eq!(
        site.agent.cli_ok(["ua", "rm", "--source", "bots"]),
        "warning: no rule of source bots\n"
    );
}
