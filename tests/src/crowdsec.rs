//! [`Crowdsec`]: a real CrowdSec (Debian's `crowdsec` package) in a test namespace, with a
//! configuration and data directory of its own: only its Local API (`-no-cs`: no log
//! acquisition, no hub content, no Central API), on loopback, and `cscli` to add bouncers and
//! decisions as an operator would. Stopped on drop, its own process by pid.

use std::{
    ffi::OsStr,
    fs::OpenOptions,
    io,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{command, netns, netns::Netns};

/// How long the Local API may take to listen after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Its port inside the test's namespace (the namespace is the test's own, so no other test
/// listens there).
pub const PORT: u16 = 18081;

/// A running CrowdSec Local API and its files.
pub struct Crowdsec {
    netns: PathBuf,
    dir: TempDir,
    child: Option<Child>,
}

impl Crowdsec {
    /// Writes a configuration into a new temporary directory, registers a machine for
    /// `cscli`, starts `crowdsec -no-cs` in `netns` and waits until the Local API listens.
    pub fn start(netns: &Netns) -> io::Result<Crowdsec> {
        let dir = tempfile::Builder::new().prefix("trk-crowdsec-").tempdir()?;
        write_config(dir.path())?;
        let mut crowdsec = Crowdsec {
            netns: netns.path().to_owned(),
            dir,
            child: None,
        };
        let password = format!("tracking-test-{}", std::process::id());
        let credentials = crowdsec.dir.path().join("local_api_credentials.yaml");
        crowdsec.cscli([
            OsStr::new("machines"),
            OsStr::new("add"),
            OsStr::new("tracking-test"),
            OsStr::new("--password"),
            OsStr::new(&password),
            OsStr::new("-f"),
            credentials.as_os_str(),
        ])?;
        crowdsec.check_credentials()?;
        crowdsec.spawn()?;
        Ok(crowdsec)
    }

    /// The Local API's URL, as the agent inside the same namespace reaches it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{PORT}/")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("crowdsec.log")).unwrap_or_default()
    }

    /// `cscli bouncers add <name>`: registers a bouncer and writes its key to a file, whose
    /// path is returned (what `--crowdsec-key-file` takes).
    pub fn add_bouncer(&self, name: &str) -> io::Result<PathBuf> {
        let key = self.cscli(["bouncers", "add", name, "-o", "raw"])?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(io::Error::other(format!(
                "cscli bouncers add printed no key: {key:?}"
            )));
        }
        let path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&path, format!("{key}\n"))?;
        Ok(path)
    }

    /// `cscli -c <config> <args>` in the namespace (it talks to the Local API for decisions).
    pub fn cscli<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cscli = netns::command_in(&self.netns, "cscli");
        cscli
            .arg("-c")
            .arg(self.config())
            .args(["--error"])
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command::run(&mut cscli)
    }

    /// Stops the Local API (SIGTERM, then SIGKILL), keeping its database.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill has no memory effects; `pid` is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same configuration and database.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// `cscli` finds the Local API through the credentials `machines add` wrote.
    fn check_credentials(&self) -> io::Result<()> {
        let credentials = self.dir.path().join("local_api_credentials.yaml");
        let text = std::fs::read_to_string(&credentials)?;
        if !text.contains("login: tracking-test") {
            return Err(io::Error::other(format!(
                "cscli machines add wrote no credentials to {}",
                credentials.display()
            )));
        }
        Ok(())
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("crowdsec.log"))?;
        let mut run = netns::command_in(&self.netns, "crowdsec");
        run.arg("-c")
            .arg(self.config())
            .arg("-no-cs")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = run
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", command::display(&run))))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.listens() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "crowdsec exited ({status}) before listening:\n{}",
                    self.log()
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "crowdsec did not listen on port {PORT} within {READY_TIMEOUT:?}:\n{}",
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn listens(&self) -> bool {
        let netns = self.netns.clone();
        thread::spawn(move || {
            netns::enter(&netns).is_ok()
                && TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)),
                    Duration::from_millis(200),
                )
                .is_ok()
        })
        .join()
        .unwrap_or(false)
    }
}

impl Drop for Crowdsec {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("crowdsec log:\n{}", self.log());
        }
        self.stop();
    }
}

/// A configuration with everything in `dir`: SQLite database, an empty hub, the Local API on
/// loopback, no Central API, no Prometheus listener, decisions from cscli go through the
/// default profile.
fn write_config(dir: &Path) -> io::Result<()> {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::create_dir_all(dir.join("hub"))?;
    std::fs::write(dir.join("hub/.index.json"), "{}\n")?;
    std::fs::write(dir.join("simulation.yaml"), "simulation: off\n")?;
    std::fs::write(
        dir.join("profiles.yaml"),
        "name: default_ip_remediation\n\
         filters:\n \
         - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
         decisions:\n \
         - type: ban\n   \
           duration: 4h\n\
         on_success: break\n",
    )?;
    std::fs::write(dir.join("acquis.yaml"), "")?;
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n\
             config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  \
             simulation_path: {d}/simulation.yaml\n  hub_dir: {d}/hub/\n  \
             index_path: {d}/hub/.index.json\n  notification_dir: {d}/notifications/\n  \
             plugin_dir: /usr/lib/crowdsec/plugins/\n\
             crowdsec_service:\n  acquisition_path: {d}/acquis.yaml\n\
             cscli:\n  output: human\n  color: false\n\
             db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  \
             use_wal: true\n\
             api:\n  client:\n    credentials_path: {d}/local_api_credentials.yaml\n  \
             server:\n    log_level: info\n    listen_uri: 127.0.0.1:{PORT}\n    \
             profiles_path: {d}/profiles.yaml\n    trusted_ips:\n      - 127.0.0.1\n\
             prometheus:\n  enabled: false\n"
        ),
    )?;
    Ok(())
}

/// Whether the `crowdsec` and `cscli` programs are installed (`cargo xtask setup` installs
/// them); the tests fail, never skip, without them.
pub fn installed() -> bool {
    Command::new("cscli")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
