//! Browser logins to the pages. `POST /login` with the admin token opens a session: a random
//! id (256 bits) in an `HttpOnly`, `SameSite=Strict` cookie (also `Secure` when the page was
//! reached over HTTPS), kept in memory with its expiry, so the cookie never holds the token
//! itself and logging out revokes it; a restart logs everyone out. Failed logins are limited
//! per client address.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The name of the session cookie.
pub const COOKIE: &str = "tracking_session";
/// Failed logins a client address may make within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// How long failed logins count against an address.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sessions kept at most; the oldest go first beyond (nobody logs in this often).
const MAX_SESSIONS: usize = 10_000;

/// Open sessions and recent failed logins.
pub struct Sessions {
    lifetime: Duration,
    open: Mutex<HashMap<String, Instant>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions {
            lifetime,
            open: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Opens a session and returns its id.
    pub fn open(&self) -> std::io::Result<String> {
        let id = crate::tokens::random_token()?;
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, expires| *expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, e)| **e).map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), now + self.lifetime);
        Ok(id)
    }

    /// Whether `id` names an open session that has not expired.
    pub fn valid(&self, id: &str) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(id).is_some_and(|expires| *expires > Instant::now())
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// `Err` with how long to wait when `client` failed too often lately.
    pub fn may_try(&self, client: IpAddr) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&client) {
            Some(&(count, since)) if count >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW => {
                Err(FAILURE_WINDOW - since.elapsed())
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login of `client`.
    pub fn failed(&self, client: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() > MAX_SESSIONS {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(client).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets the failures of `client` once it logs in.
    pub fn succeeded(&self, client: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_until_closed_or_expired() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.open().unwrap();
        assert_eq!(id.len(), 64);
        assert!(sessions.valid(&id));
        assert!(!sessions.valid("not-a-session"));
        sessions.close(&id);
        assert!(!sessions.valid(&id));
        let brief = Sessions::new(Duration::from_millis(1));
        let id = brief.open().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!brief.valid(&id));
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(sessions.may_try(a).is_ok());
            sessions.failed(a);
        }
        let wait = sessions.may_try(a).unwrap_err();
        assert!(wait > Duration::from_secs(50), "{wait:?}");
        assert!(sessions.may_try(b).is_ok(), "other addresses are not held up");
        sessions.succeeded(a);
        assert!(sessions.may_try(a).is_ok());
    }
}
