//! The CrowdSec Local API as a bouncer sees it: `GET /v1/decisions/stream` with the bouncer's
//! key, over plain HTTP/1.1 (one connection a pull: at one pull a second that costs nothing
//! worth pooling, and a Local API that restarted never meets a stale connection).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::tokens::Secret;

/// The longest a pull may take, connection included.
const PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer taken: a Local API fed by the community blocklist answers a startup pull
/// with some tens of thousands of decisions, a few MiB.
const MAX_ANSWER: usize = 256 << 20;

/// Where the Local API listens: `http://HOST:PORT[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LapiUrl {
    host: String,
    port: u16,
    /// The path before `/v1/...`, without a trailing slash; usually empty.
    prefix: String,
}

impl LapiUrl {
    pub fn parse(s: &str) -> Result<LapiUrl, String> {
        let uri: Uri = s
            .parse()
            .map_err(|e| format!("`{s}` is not a URL like http://127.0.0.1:8080/: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{s}`: https is not supported; reach the Local API over loopback or a \
                     private network with http://"
                ));
            }
            _ => return Err(format!("`{s}` is not an http:// URL")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{s}` names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if uri.query().is_some() {
            return Err(format!("`{s}`: the URL of the Local API takes no query"));
        }
        Ok(LapiUrl {
            host,
            port: uri.port_u16().unwrap_or(80),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for LapiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}/", self.authority(), self.prefix)
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum LapiError {
    #[error("cannot reach the Local API at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Local API at {url} broke off: {source}")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the Local API at {url} did not answer within {PULL_TIMEOUT:?}")]
    Timeout { url: String },
    #[error(
        "the Local API at {url} refused the bouncer key ({status}): register the bouncer with \
         `cscli bouncers add` and put its key in --crowdsec-key-file"
    )]
    Forbidden { url: String, status: StatusCode },
    #[error("the Local API at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("reading the Local API's answer: {0}")]
    Body(String),
    #[error("the Local API's answer is not a decision stream: {0}")]
    Json(#[from] serde_json::Error),
}

/// One decision as the stream gives it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Decision {
    pub id: i64,
    /// `ban`, `captcha`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `Ip`, `Range`, `Country`, `AS`, ...
    pub scope: String,
    pub value: String,
    /// A Go duration: how long the decision still runs (`3h59m58.78s`; negative once over).
    pub duration: String,
    #[serde(default)]
    pub scenario: String,
    #[serde(default)]
    pub origin: String,
}

/// The answer to a pull: decisions new since the last pull (every live one at startup), and
/// those deleted or expired since.
#[derive(Debug, Default, Deserialize)]
pub struct Stream {
    #[serde(default, deserialize_with = "null_is_empty")]
    pub new: Vec<Decision>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub deleted: Vec<Decision>,
}

/// The Local API writes an empty list as `null`.
fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Decision>, D::Error> {
    Ok(Option::<Vec<Decision>>::deserialize(d)?.unwrap_or_default())
}

/// Pulls the decision stream: every live decision when `startup`, else what changed since the
/// last pull of this bouncer key.
pub async fn pull(url: &LapiUrl, key: &Secret, startup: bool) -> Result<Stream, LapiError> {
    let shown = url.to_string();
    tokio::time::timeout(PULL_TIMEOUT, pull_now(url, key, startup))
        .await
        .map_err(|_| LapiError::Timeout { url: shown })?
}

async fn pull_now(url: &LapiUrl, key: &Secret, startup: bool) -> Result<Stream, LapiError> {
    let shown = url.to_string();
    let connect = |source| LapiError::Connect {
        url: shown.clone(),
        source,
    };
    let stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(connect)?;
    let http = |source| LapiError::Http {
        url: shown.clone(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(connection);
    let request = Request::get(format!(
        "{}/v1/decisions/stream?startup={startup}&scopes=ip,range",
        url.prefix
    ))
    .header(header::HOST, url.authority())
    .header(
        header::USER_AGENT,
        concat!("tracking-bouncer/", env!("CARGO_PKG_VERSION")),
    )
    .header("X-Api-Key", key.0.as_str())
    .body(Empty::<Bytes>::new())
    .expect("a well-formed request");
    let answer = sender.send_request(request).await;
    let result = async {
        let answer = answer.map_err(http)?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| LapiError::Body(e.to_string()))?
            .to_bytes();
        match status {
            StatusCode::OK => Ok(serde_json::from_slice(&body)?),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(LapiError::Forbidden {
                url: shown.clone(),
                status,
            }),
            _ => Err(LapiError::Status {
                url: shown.clone(),
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
        }
    }
    .await;
    driver.abort();
    result
}

/// A Go `time.Duration` as `String()` writes it (`1h59m59.061176348s`, `-29.061494ms`, `0s`),
/// in seconds.
pub fn go_duration(s: &str) -> Result<f64, String> {
    let bad = || format!("`{s}` is not a duration");
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(0.0);
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if number_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_the_local_api_writes_them() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(
            go_duration("1h59m59.061176348s").unwrap(),
            7199.061176348
        ));
        assert!(close(go_duration("-29.061494ms").unwrap(), -0.029061494));
        assert!(close(go_duration("3m").unwrap(), 180.0));
        assert!(close(go_duration("0s").unwrap(), 0.0));
        assert!(close(go_duration("1.5µs").unwrap(), 1.5e-6));
        for bad in ["", "-", "12", "1x", "h", "1h2"] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_url_must_be_plain_http_with_a_host() {
        let url = LapiUrl::parse("http://127.0.0.1:8081/").unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:8081/");
        assert_eq!(url.prefix, "");
        let url = LapiUrl::parse("http://[::1]:8081/lapi/").unwrap();
        assert_eq!(url.to_string(), "http://[::1]:8081/lapi/");
        assert_eq!(LapiUrl::parse("http://localhost").unwrap().port, 80);
        assert!(
            LapiUrl::parse("https://127.0.0.1:8080/")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(LapiUrl::parse("127.0.0.1:8080").is_err());
        assert!(LapiUrl::parse("http://127.0.0.1:8080/?x=1").is_err());
    }

    #[test]
    fn an_empty_list_may_be_null() {
        let stream: Stream = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert!(stream.new.is_empty() && stream.deleted.is_empty());
        let stream: Stream = serde_json::from_str(
            r#"{"deleted":null,"new":[{"duration":"1h59m59.06s","id":1,"origin":"cscli",
                "scenario":"manual 'ban' from 'test'","scope":"Ip","type":"ban",
                "value":"10.9.9.9"}]}"#,
        )
        .unwrap();
        assert_eq!(stream.new[0].value, "10.9.9.9");
        assert_eq!(stream.new[0].kind, "ban");
    }
}
