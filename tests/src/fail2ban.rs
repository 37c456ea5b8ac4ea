//! [`Fail2ban`]: a real `fail2ban-server` (Debian's `fail2ban` package) in the foreground with
//! a configuration directory of its own: jails that watch a log file the test writes, with the
//! project's action (`integrations/fail2ban/action.d/tracking.conf`) calling the agent's CLI.
//! Stopped on drop, its own process by pid.

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::command;

/// One jail: its name (the agent's source of its bans), ban time in seconds (`-1`: for ever)
/// and how many failures ban.
#[derive(Clone, Debug)]
pub struct Jail {
    pub name: String,
    pub bantime: i64,
    pub maxretry: u32,
}

/// A running fail2ban-server and its files.
pub struct Fail2ban {
    dir: TempDir,
    child: Option<Child>,
}

impl Fail2ban {
    /// Starts fail2ban with `jails`, each watching [`Fail2ban::log_path`] for lines
    /// `login failed from <address>`, banning through `tracking` (the CLI command line the
    /// action runs, e.g. `/path/tracking --socket /path/sock`).
    pub fn start(jails: &[Jail], tracking: &str) -> io::Result<Fail2ban> {
        let dir = tempfile::Builder::new().prefix("trk-fail2ban-").tempdir()?;
        let d = dir.path();
        for sub in ["action.d", "filter.d", "jail.d"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let action = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../integrations/fail2ban/action.d/tracking.conf");
        std::fs::copy(&action, d.join("action.d/tracking.conf"))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", action.display())))?;
        std::fs::write(
            d.join("fail2ban.conf"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {0}/fail2ban.log\n\
                 socket = {0}/fail2ban.sock\npidfile = {0}/fail2ban.pid\ndbfile = :memory:\n",
                d.display()
            ),
        )?;
        std::fs::write(
            d.join("filter.d/test-login.conf"),
            "[Definition]\nfailregex = ^login failed from <HOST>$\nignoreregex =\n",
        )?;
        std::fs::write(d.join("app.log"), "")?;
        let mut jail_conf = String::from("[DEFAULT]\nbackend = polling\ndatepattern = {NONE}\n");
        for jail in jails {
            jail_conf.push_str(&format!(
                "\n[{}]\nenabled = true\nfilter = test-login\nlogpath = {}/app.log\n\
                 maxretry = {}\nfindtime = 600\nbantime = {}\n\
                 action = tracking[tracking=\"{tracking}\"]\n",
                jail.name,
                d.display(),
                jail.maxretry,
                jail.bantime
            ));
        }
        std::fs::write(d.join("jail.conf"), jail_conf)?;
        let mut server = Command::new("fail2ban-server");
        server
            .args(["-f", "-x", "-c"])
            .arg(d)
            .arg("-s")
            .arg(d.join("fail2ban.sock"))
            .arg("-p")
            .arg(d.join("fail2ban.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("server.err"))?);
        let child = server
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("fail2ban-server: {e}")))?;
        let mut fail2ban = Fail2ban {
            dir,
            child: Some(child),
        };
        fail2ban.wait_started(jails)?;
        Ok(fail2ban)
    }

    /// The log file the jails watch.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("app.log")
    }

    /// fail2ban's own log.
    pub fn log(&self) -> String {
        let mut log =
            std::fs::read_to_string(self.dir.path().join("fail2ban.log")).unwrap_or_default();
        log.push_str(
            &std::fs::read_to_string(self.dir.path().join("server.err")).unwrap_or_default(),
        );
        log
    }

    /// Appends `count` failed logins from `address` to the watched log, as the app would.
    pub fn fail(&self, address: &str, count: usize) -> io::Result<()> {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())?;
        for _ in 0..count {
            writeln!(log, "login failed from {address}")?;
        }
        Ok(())
    }

    /// `fail2ban-client -s <socket> <args>`.
    pub fn client<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut client = Command::new("fail2ban-client");
        client
            .arg("-s")
            .arg(self.dir.path().join("fail2ban.sock"))
            .args(args)
            .stdin(Stdio::null());
        command::run(&mut client)
    }

    /// Stops the server the way an operator does (`fail2ban-client stop`), which runs each
    /// jail's `actionstop`; SIGKILL if it has not exited after 20 s.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let asked = self.client(["stop"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return asked.map(|_| ());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(io::Error::other(format!(
            "fail2ban-server did not stop within 20 s ({asked:?}):\n{}",
            self.log()
        )))
    }

    fn wait_started(&mut self, jails: &[Jail]) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if jails
                .iter()
                .all(|j| log.contains(&format!("Jail '{}' started", j.name)))
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "fail2ban-server exited ({status}):\n{log}"
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "fail2ban's jails did not start within 30 s:\n{log}"
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("fail2ban log:\n{}", self.log());
        }
        if let Err(e) = self.stop() {
            eprintln!("harness: {e}");
        }
    }
}
