//! Showing a connection URL without its password: in `tracking status`, in logs, in `Debug`.
//!
//! tokio-postgres ends the credentials at the first `@` and starts the password after the first
//! `:` in them. A person who forgot to percent-encode an `@` in a password means the last `@`
//! before the host, though; so the part hidden runs from that `:` to the last `@` before the
//! path: everything the driver reads as the password, and whatever else the person meant as
//! one. It may hide more than the password, never less. A `password=` query parameter is hidden
//! too.

/// What stands in for a password.
const MASK: &str = "***";

/// `url` with its password, if any, replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        // Not a URL: nothing we can parse safely, so nothing of it is shown.
        return MASK.into();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    let rest = match rest.find('@') {
        Some(first_at) => {
            let path = rest[first_at..]
                .find('/')
                .map_or(rest.len(), |i| first_at + i);
            let last_at = rest[..path]
                .rfind('@')
                .expect("the first `@` is before the path");
            match rest[..first_at].split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(&rest[..last_at]),
            }
            out.push('@');
            &rest[last_at + 1..]
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((location, query)) => {
            out.push_str(location);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if is_password_key(key) => format!("{key}={MASK}"),
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(rest),
    }
    out
}

/// Whether a query key names the password, percent-encoded or not (`pass%77ord`).
fn is_password_key(key: &str) -> bool {
    let decoded: String = percent_decode(key);
    decoded == "password"
}

/// Enough percent-decoding to compare a key; bytes that do not decode stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_hidden_and_everything_else_shown() {
        assert_eq!(
            redacted("postgres://user:secret@db.internal:5433/tracking"),
            "postgres://user:***@db.internal:5433/tracking"
        );
        assert_eq!(
            redacted("postgresql://u:p%40ss@h/db?sslmode=disable"),
            "postgresql://u:***@h/db?sslmode=disable"
        );
    }

    #[test]
    fn a_url_without_a_password_is_shown_as_it_is() {
        for url in [
            "postgres://user@host/db",
            "postgres://host/db",
            "postgresql://postgres@%2Ftmp%2Fpg:5432/test_1",
            "postgresql:///db?host=/run/postgresql",
        ] {
            assert_eq!(redacted(url), url);
        }
    }

    #[test]
    fn a_password_in_the_query_is_hidden() {
        assert_eq!(
            redacted("postgres:///db?user=u&password=secret&host=/run/postgresql"),
            "postgres:///db?user=u&password=***&host=/run/postgresql"
        );
        assert_eq!(
            redacted("postgres:///db?pass%77ord=secret"),
            "postgres:///db?pass%77ord=***"
        );
    }

    #[test]
    fn an_unencoded_at_or_question_mark_in_the_password_does_not_leak_it() {
        // tokio-postgres reads the password `a:b` here; the person meant `a:b@c`.
        let url = "postgres://u:a:b@c@h/db";
        let parsed: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"a:b"[..]));
        assert_eq!(redacted(url), "postgres://u:***@h/db");
        assert_eq!(redacted("postgres://u:pa?ss@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn something_that_is_not_a_url_is_not_shown() {
        assert_eq!(redacted("host=h password=secret"), "***");
    }
}
