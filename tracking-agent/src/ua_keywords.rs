//! The user-agent rules as the tracker matches them: every keyword in one Aho-Corasick
//! automaton over the lowercased user agent, so that a visit costs one pass over its user
//! agent however many rules there are (the bot list alone has about 1,500).

use aho_corasick::AhoCorasick;

/// The keywords of the user-agent rules, lowercased, ready to match.
#[derive(Debug, Default)]
pub struct UaKeywords {
    /// `None` when there are no rules.
    automaton: Option<AhoCorasick>,
    count: usize,
}

impl UaKeywords {
    /// The matcher of `keywords` (lowercased here).
    pub fn new<I, S>(keywords: I) -> UaKeywords
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let lowered: Vec<String> = keywords
            .into_iter()
            .map(|k| k.as_ref().to_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        let count = lowered.len();
        if count == 0 {
            return UaKeywords::default();
        }
        let automaton = AhoCorasick::new(&lowered)
            .expect("an automaton of a few thousand short keywords fits the default limits");
        UaKeywords {
            automaton: Some(automaton),
            count,
        }
    }

    /// How many keywords there are.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `agent` contains a keyword, in any case.
    pub fn matches(&self, agent: &str) -> bool {
        let Some(automaton) = &self.automaton else {
            return false;
        };
        // Nearly every user agent is ASCII, which lowercases far more cheaply than Unicode.
        if agent.is_ascii() {
            automaton.is_match(&agent.to_ascii_lowercase())
        } else {
            automaton.is_match(&agent.to_lowercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyword_matches_anywhere_in_any_case() {
        let keywords = UaKeywords::new(["GoogleBot", "curl/", "ÄBot"]);
        assert_eq!(keywords.len(), 3);
        assert!(keywords.matches("Mozilla/5.0 (compatible; Googlebot/2.1)"));
        assert!(keywords.matches("CURL/8.0"));
        assert!(keywords.matches("äbot 1.0"));
        assert!(!keywords.matches("Mozilla/5.0 Firefox/121.0"));
        assert!(!keywords.matches("curl"));
    }

    #[test]
    fn no_rules_match_nothing() {
        let keywords = UaKeywords::new(Vec::<String>::new());
        assert!(keywords.is_empty());
        assert!(!keywords.matches("Googlebot"));
    }
}
