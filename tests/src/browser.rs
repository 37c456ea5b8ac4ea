//! [`Browser`]: a real headless Chromium inside a test namespace, driven over the Chrome DevTools
//! Protocol ([`cdp`]): load a page, run JavaScript in it to read the DOM, wait for something
//! to show, take a screenshot.
//!
//! Chromium runs in the namespace of the agent under test, so the pages are at
//! `http://127.0.0.1:<port>/` as they would be for an operator on the host. Its DevTools port
//! is in that namespace too: the websocket is opened from a thread that joined it.
//!
//! Chromium starts in a process group of its own with a fresh profile directory; dropping the
//! [`Browser`] kills that group (Chromium and its helpers, nothing else) and removes the
//! profile, also when the test panics.

mod cdp;

use std::{
    ffi::OsString,
    io::{self, BufRead as _, BufReader},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{binary, command, netns::Netns};
use cdp::Cdp;

/// How long Chromium may take to start and say where DevTools listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command may take (a navigation includes loading the page).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How often [`Browser::wait_for`] asks again.
const POLL: Duration = Duration::from_millis(100);
/// How much of Chromium's stderr failure messages show.
const LOG_TAIL_LINES: usize = 40;
/// The window, and so the screenshots.
const WINDOW: (u32, u32) = (1280, 900);

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("cannot start chromium: {0}")]
    Io(#[from] io::Error),
    #[error("chromium did not say where DevTools listens within {START_TIMEOUT:?}\n{log}")]
    NoDevTools { log: String },
    #[error("DevTools protocol: {0}")]
    Protocol(String),
    #[error("{method} failed: {message}")]
    Command { method: String, message: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("the page threw running `{expression}`: {message}")]
    Script { expression: String, message: String },
}

/// A headless Chromium with one page open. See the module documentation.
pub struct Browser {
    cdp: Cdp,
    /// The page's session: commands for the page carry it.
    session: String,
    /// Chromium's process (through nsenter, which execs it: the same pid), the leader of its
    /// own process group.
    child: Child,
    /// Chromium's stderr so far, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    /// `--user-data-dir`: removed on drop, after Chromium is gone.
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium inside `netns` with one blank page.
    ///
    /// The program is `chromium`, or the one `CHROMIUM` names.
    pub fn launch(netns: &Netns) -> Result<Browser, BrowserError> {
        let profile = tempfile::Builder::new().prefix("trk-chromium-").tempdir()?;
        let program = std::env::var_os("CHROMIUM").unwrap_or_else(|| OsString::from("chromium"));
        let mut user_data_dir = OsString::from("--user-data-dir=");
        user_data_dir.push(profile.path());
        let mut run = netns.command(&program);
        run.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ])
        .arg(user_data_dir)
        .args(["--remote-debugging-port=0", "about:blank"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own group, so that drop can end Chromium's helper processes with it.
        .process_group(0);
        let mut child = run
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", command::display(&run))))?;

        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, devtools) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::clone(&log);
        // Reads stderr for as long as Chromium runs, so that it never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.trim().to_owned());
                }
                let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                lines.push(line);
                if lines.len() > 2 * LOG_TAIL_LINES {
                    lines.drain(..LOG_TAIL_LINES);
                }
            }
        });

        let url = match devtools.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                kill_group(&mut child);
                return Err(BrowserError::NoDevTools { log: tail(&log) });
            }
        };
        // From here on a failure drops the browser, which kills Chromium.
        let connected = connect(netns, &url);
        let cdp = match connected {
            Ok(cdp) => cdp,
            Err(error) => {
                kill_group(&mut child);
                return Err(error);
            }
        };
        let mut browser = Browser {
            cdp,
            session: String::new(),
            child,
            log,
            _profile: profile,
        };
        browser.open_page()?;
        Ok(browser)
    }

    /// Opens a page target and attaches to it (one websocket for the browser and the page).
    fn open_page(&mut self) -> Result<(), BrowserError> {
        let target = self.cdp.call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank"}),
            COMMAND_TIMEOUT,
        )?;
        let attached = self.cdp.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
            COMMAND_TIMEOUT,
        )?;
        self.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| BrowserError::Protocol(format!("no sessionId in {attached}")))?
            .to_owned();
        self.page_call("Page.enable", json!({}))?;
        self.page_call("Page.setLifecycleEventsEnabled", json!({"enabled": true}))?;
        // Before any page script: every Content-Security-Policy violation of every page is
        // kept, for [`Browser::csp_violations`].
        self.page_call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "window.__cspViolations = []; document.addEventListener(\
                'securitypolicyviolation', e => window.__cspViolations.push(\
                e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') + ' at ' + \
                e.sourceFile + ':' + e.lineNumber));"}),
        )?;
        Ok(())
    }

    /// The Content-Security-Policy violations of the current page so far, as `directive
    /// blocked what at where`.
    pub fn csp_violations(&mut self) -> Result<Vec<String>, BrowserError> {
        let value = self.eval("window.__cspViolations || []")?;
        Ok(value
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// The address each frame of the current page shows, the page's own first: a frame the
    /// browser refused to show has Chromium's error page (`chrome-error://...`).
    pub fn frame_urls(&mut self) -> Result<Vec<String>, BrowserError> {
        let tree = self.page_call("Page.getFrameTree", json!({}))?;
        let mut urls = Vec::new();
        let mut todo = vec![tree["frameTree"].clone()];
        while let Some(node) = todo.pop() {
            if let Some(url) = node["frame"]["url"].as_str() {
                urls.push(url.to_owned());
            }
            if let Some(children) = node["childFrames"].as_array() {
                todo.extend(children.iter().cloned());
            }
        }
        Ok(urls)
    }

    fn page_call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        let session = self.session.clone();
        self.cdp
            .call(Some(&session), method, params, COMMAND_TIMEOUT)
    }

    /// Loads `url` and waits for its load event (scripts that run at load have run). Redirects
    /// are followed: the page may end up at another address.
    pub fn goto(&mut self, url: &str) -> Result<(), BrowserError> {
        let navigated = self.page_call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = navigated.get("errorText").and_then(Value::as_str) {
            return Err(BrowserError::Command {
                method: format!("Page.navigate to {url}"),
                message: error.to_owned(),
            });
        }
        // The load of this navigation, not a late one of the page before: lifecycle events
        // name their navigation's loader.
        let loader = navigated["loaderId"].clone();
        let session = self.session.clone();
        self.cdp.wait_event(
            &session,
            "Page.lifecycleEvent",
            |event| event["name"] == "load" && event["loaderId"] == loader,
            COMMAND_TIMEOUT,
        )?;
        Ok(())
    }

    /// Runs `expression` in the page and returns its value (promises are awaited). The value
    /// must be JSON: read the DOM into strings, numbers, arrays.
    pub fn eval(&mut self, expression: &str) -> Result<Value, BrowserError> {
        let answer = self.page_call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(exception) = answer.get("exceptionDetails") {
            let message = exception["exception"]["description"]
                .as_str()
                .or_else(|| exception["text"].as_str())
                .unwrap_or("?");
            return Err(BrowserError::Script {
                expression: expression.to_owned(),
                message: message.to_owned(),
            });
        }
        Ok(answer["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Runs `expression` until its value is truthy (not `false`, `null`, `0`, `""`), and
    /// returns that value. Errors while the page changes (a navigation destroys the context)
    /// count as "not yet".
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Result<Value, BrowserError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.eval(expression) {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => value,
                Err(BrowserError::Timeout(what)) => return Err(BrowserError::Timeout(what)),
                Err(error) => Value::String(error.to_string()),
            };
            if Instant::now() >= deadline {
                return Err(BrowserError::Timeout(format!(
                    "`{expression}` still {last} after {timeout:?}"
                )));
            }
            thread::sleep(POLL);
        }
    }

    /// Makes the page's window `width` x `height` CSS pixels (a phone is about 390 x 844); the
    /// page lays itself out again.
    pub fn set_window(&mut self, width: u32, height: u32) -> Result<(), BrowserError> {
        self.page_call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(())
    }

    /// A PNG of the whole page (beyond the window when the page is longer).
    pub fn screenshot(&mut self) -> Result<Vec<u8>, BrowserError> {
        let metrics = self.page_call("Page.getLayoutMetrics", json!({}))?;
        let viewport = &metrics["cssLayoutViewport"];
        let content = &metrics["cssContentSize"];
        let size = |key: &str, default: u32| {
            let shown = viewport[match key {
                "width" => "clientWidth",
                _ => "clientHeight",
            }]
            .as_f64()
            .unwrap_or(f64::from(default));
            content[key].as_f64().unwrap_or(shown).max(shown).max(1.0)
        };
        let (width, height) = (size("width", WINDOW.0), size("height", WINDOW.1));
        let shot = self.page_call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }),
        )?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| BrowserError::Protocol("a screenshot without data".to_owned()))?;
        data_encoding::BASE64
            .decode(data.as_bytes())
            .map_err(|error| BrowserError::Protocol(format!("screenshot data: {error}")))
    }

    /// Takes a [`Browser::screenshot`] and writes it to `path`, making the directories.
    pub fn save_screenshot(&mut self, path: &Path) -> Result<Vec<u8>, BrowserError> {
        let png = self.screenshot()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, &png)?;
        Ok(png)
    }

    /// The end of Chromium's stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        // The profile directory is removed when the fields drop, after this: Chromium is
        // gone by then.
        kill_group(&mut self.child);
    }
}

/// `target/test-artifacts/<name>` (under `CARGO_TARGET_DIR` when set): where tests leave
/// screenshots for a person to look at.
pub fn artifact_path(name: impl AsRef<Path>) -> PathBuf {
    binary::target_dir().join("test-artifacts").join(name)
}

/// Opens the websocket at `url` from inside `netns`, where Chromium listens.
fn connect(netns: &Netns, url: &str) -> Result<Cdp, BrowserError> {
    let address = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|host_port| host_port.parse::<SocketAddr>().ok())
        .ok_or_else(|| BrowserError::Protocol(format!("an odd DevTools address: {url}")))?;
    let stream = netns.run(|| TcpStream::connect_timeout(&address, START_TIMEOUT))?;
    Cdp::connect(stream, url)
}

/// SIGKILL to the process group Chromium leads (Chromium and the helpers it started, which
/// nothing else belongs to), then reaps Chromium.
fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let group = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill has no memory effects. `group` is our own unreaped child's pid and its
        // process group id (process_group(0)), which cannot be reused while it is unreaped.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let _ = child.wait();
}

fn tail(log: &Mutex<Vec<String>>) -> String {
    let lines = log.lock().unwrap_or_else(|p| p.into_inner());
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    format!(
        "chromium stderr (last lines):\n{}",
        lines[start..].join("\n")
    )
}

/// JavaScript's truthiness, for JSON values.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_is_javascripts() {
        for falsy in [json!(null), json!(false), json!(0), json!(""), json!(0.0)] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for truthy_value in [json!(true), json!(1), json!("x"), json!([]), json!({})] {
            assert!(truthy(&truthy_value), "{truthy_value}");
        }
    }

    #[test]
    fn artifacts_go_under_the_target_directory() {
        let path = artifact_path("pages/map.png");
        assert!(
            path.ends_with("test-artifacts/pages/map.png"),
            "{}",
            path.display()
        );
    }
}
