//! The bot list of `tracking ua import --bots`: the crawler user agents of the
//! crawler-user-agents project (MIT licence, see `bots/LICENSE-crawler-user-agents`), as
//! case-insensitive keywords (`bots/keywords.txt`, made by `bots/convert.py` from the list's
//! regular expressions). They become user-agent rules of their own source, [`SOURCE`], so that
//! `ua ls --source bots` lists them and `ua rm --source bots` removes them together.

/// The source of the imported rules.
pub const SOURCE: &str = "bots";
/// Which list, and which version of it, is embedded.
pub const LIST: &str = "crawler-user-agents 1.60.0";

const KEYWORDS: &str = include_str!("bots/keywords.txt");

/// The keywords, lowercase, each once.
pub fn keywords() -> impl Iterator<Item = &'static str> {
    KEYWORDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_bot(agent: &str) -> bool {
        let agent = agent.to_lowercase();
        keywords().any(|k| agent.contains(k))
    }

    #[test]
    fn the_list_names_the_crawlers_and_not_the_browsers() {
        for bot in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "curl/8.4.0",
            "Wget/1.21.3",
            "python-requests/2.31.0",
        ] {
            assert!(is_bot(bot), "{bot}");
        }
        for browser in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        ] {
            assert!(!is_bot(browser), "{browser}");
        }
    }

    #[test]
    fn keywords_are_lowercase_distinct_and_fit_a_rule() {
        let all: Vec<&str> = keywords().collect();
        assert!(all.len() > 1000, "{}", all.len());
        let distinct: std::collections::HashSet<&str> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len());
        for k in all {
            assert_eq!(k, k.to_lowercase());
            assert!(k.len() <= 256 && !k.is_empty(), "{k}");
        }
    }
}
