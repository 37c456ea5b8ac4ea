//! The bouncer's settings: `--crowdsec-url`, `--crowdsec-key-file`, `--crowdsec-interval`.

use std::{path::PathBuf, time::Duration};

use super::lapi::LapiUrl;
use crate::tokens::Secret;

/// How often the Local API is asked by default. CrowdSec's own firewall bouncer asks every
/// 10 s; a second costs the Local API one indexed query.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// `--crowdsec-url`, `--crowdsec-key-file`, `--crowdsec-interval`, validated.
#[derive(Clone, Debug)]
pub struct CrowdsecConfig {
    pub url: LapiUrl,
    /// The bouncer's API key, from `cscli bouncers add`.
    pub key: Secret,
    pub key_file: PathBuf,
    pub interval: Duration,
}

impl CrowdsecConfig {
    /// Reads the key file; `url` and `key_file` come together or not at all.
    pub fn resolve(
        url: Option<String>,
        key_file: Option<PathBuf>,
        interval: Option<Duration>,
    ) -> Result<Option<CrowdsecConfig>, String> {
        let (url, key_file) = match (url, key_file) {
            (None, None) => {
                return match interval {
                    Some(_) => Err("crowdsec-interval is set without crowdsec-url".into()),
                    None => Ok(None),
                };
            }
            (Some(_), None) => {
                return Err(
                    "crowdsec-url needs crowdsec-key-file, a file holding the key that \
                     `cscli bouncers add` printed"
                        .into(),
                );
            }
            (None, Some(_)) => return Err("crowdsec-key-file is set without crowdsec-url".into()),
            (Some(url), Some(key_file)) => (url, key_file),
        };
        let url = LapiUrl::parse(&url).map_err(|e| format!("crowdsec-url: {e}"))?;
        let text = std::fs::read_to_string(&key_file)
            .map_err(|e| format!("crowdsec-key-file: cannot read {}: {e}", key_file.display()))?;
        let key = text.trim();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "crowdsec-key-file {}: expected one bouncer key (what `cscli bouncers add` \
                 printed), found {}",
                key_file.display(),
                if key.is_empty() {
                    "nothing"
                } else {
                    "several words"
                }
            ));
        }
        let interval = interval.unwrap_or(DEFAULT_INTERVAL);
        if interval < Duration::from_millis(100) {
            return Err("crowdsec-interval: at least 100ms".into());
        }
        Ok(Some(CrowdsecConfig {
            url,
            key: Secret(key.to_string()),
            key_file,
            interval,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_key_file_come_together() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "8519a6e406635a179134ec7f069bafbe\n").unwrap();
        let url = || Some("http://127.0.0.1:8081/".to_string());
        let config = CrowdsecConfig::resolve(url(), Some(key.clone()), None)
            .unwrap()
            .unwrap();
        assert_eq!(config.key.0, "8519a6e406635a179134ec7f069bafbe");
        assert_eq!(config.interval, DEFAULT_INTERVAL);
        assert!(CrowdsecConfig::resolve(None, None, None).unwrap().is_none());
        assert!(
            CrowdsecConfig::resolve(url(), None, None)
                .unwrap_err()
                .contains("needs crowdsec-key-file")
        );
        let missing = dir.path().join("missing");
        assert!(
            CrowdsecConfig::resolve(url(), Some(missing), None)
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::write(&key, "  \n").unwrap();
        assert!(
            CrowdsecConfig::resolve(url(), Some(key), None)
                .unwrap_err()
                .contains("found nothing")
        );
    }
}
