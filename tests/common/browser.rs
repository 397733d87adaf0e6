//! A real headless Chromium for browser tests: driven over WebDriver (a `chromedriver` child
//! spoken to in plain HTTP/JSON), plus [`PageServer`], the static server of the test pages.
//!
//! Each [`Browser`] has its own chromedriver port and a fresh profile directory, so tests in
//! one file can run in parallel. Dropping it kills chromedriver's process group (Chromium
//! included) and removes the profile.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::node::free_port;
use super::{request, request_within, REQUEST_TIMEOUT};

/// Bound on chromedriver answering `/status` after spawn.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a new session, which starts Chromium: four started at once in a clean clone's first
/// test run here took over 10 s.
const SESSION_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on an asynchronous script calling back (below [`super::REQUEST_TIMEOUT`], so the
/// browser reports a script timeout before the HTTP request to chromedriver gives up).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(8);
/// Size of the browser window, and so of screenshots.
const WINDOW_SIZE: &str = "--window-size=1280,900";

/// Finds `name` on `PATH`, or panics saying which package to install.
fn find_program(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: browser tests need Debian's `{package}` package \
                 (apt-get install chromium chromium-driver; tests/run.sh installs them)"
            )
        })
}

/// A Chromium session. Tests end it with [`Browser::quit`]; a panicking test drops it, which
/// kills the processes.
pub struct Browser {
    driver: Child,
    driver_addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session with a fresh
    /// profile and no background network traffic (this machine's network is closed).
    pub async fn start() -> Browser {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let chromium = find_program("chromium", "chromium");
        let chromedriver = find_program("chromedriver", "chromium-driver");
        let port = free_port();
        let profile = std::env::temp_dir().join(format!(
            "ssehub-browser-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        // Chromium's and chromedriver's temporary files go under the profile too.
        let tmp = profile.join("tmp");
        std::fs::create_dir_all(&tmp).expect("create the browser profile directory");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so Drop can kill Chromium along with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", chromedriver.display()));
        let mut browser = Browser {
            driver,
            driver_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: String::new(),
            profile,
        };
        browser.wait_driver_ready().await;
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            WINDOW_SIZE,
            &format!("--user-data-dir={}", browser.profile.join("data").display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "timeouts": {"script": SCRIPT_TIMEOUT.as_millis() as u64, "pageLoad": 8_000},
            // HTTPS hubs in the tests use a test CA Chromium does not know.
            "acceptInsecureCerts": true,
        }}});
        let created = browser
            .call_within(SESSION_START_TIMEOUT, "POST", "/session", capabilities)
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("new WebDriver session: no sessionId in {created}"))
            .to_owned();
        browser
    }

    async fn wait_driver_ready(&mut self) {
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            if let Some(status) = self.driver.try_wait().expect("try_wait chromedriver") {
                panic!("chromedriver exited with {status} before it was ready");
            }
            if tokio::net::TcpStream::connect(self.driver_addr)
                .await
                .is_ok()
            {
                let status = request(self.driver_addr, "GET", "/status", &[], b"").await;
                if status.json()["value"]["ready"] == json!(true) {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "chromedriver on {} not ready within {DRIVER_START_TIMEOUT:?}",
                    self.driver_addr
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One WebDriver command; returns its `value`, panics with the driver's error otherwise.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call_within(REQUEST_TIMEOUT, method, path, body).await
    }

    /// [`Browser::call`] with another bound on the driver's answer.
    async fn call_within(&self, timeout: Duration, method: &str, path: &str, body: Value) -> Value {
        let (body, headers) = if body.is_null() {
            (Vec::new(), &[][..])
        } else {
            let json = serde_json::to_vec(&body).expect("serialize a WebDriver command");
            (json, &[("Content-Type", "application/json")][..])
        };
        let response =
            request_within(timeout, self.driver_addr, method, path, headers, &body).await;
        let mut answer = response.json();
        if response.status != 200 {
            panic!(
                "WebDriver {method} {path} failed with {}: {} {}",
                response.status, answer["value"]["error"], answer["value"]["message"]
            );
        }
        answer["value"].take()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url` and waits for its `load` event.
    pub async fn navigate(&self, url: &str) {
        self.call("POST", &self.session_path("/url"), json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns
    /// what it returns.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        let command = json!({ "script": script, "args": args });
        self.call("POST", &self.session_path("/execute/sync"), command)
            .await
    }

    /// Runs `script`, which must call its last argument (`arguments[arguments.length - 1]`)
    /// with the result within the script timeout, e.g. when a promise settles.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        let command = json!({ "script": script, "args": args });
        self.call("POST", &self.session_path("/execute/async"), command)
            .await
    }

    /// Polls `script` every 50 ms until it returns `true`; after `timeout`, panics with `what`
    /// and the script's last result (so a condition like `return done || state` explains
    /// itself).
    pub async fn wait_for(&self, script: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.execute(script, json!([])).await;
            if result == json!(true) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("browser: timed out after {timeout:?} waiting until {what}; got {result}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self
            .call("GET", &self.session_path("/screenshot"), Value::Null)
            .await;
        let encoded = encoded.as_str().expect("screenshot is a base64 string");
        decode_base64(encoded).expect("screenshot is valid base64")
    }

    /// Ends the session (Chromium exits); dropping `self` then stops chromedriver.
    pub async fn quit(self) {
        self.call("DELETE", &self.session_path(""), Value::Null)
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group (see `start`): this also ends a Chromium
        // whose session was not quit.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (as in CSP hashes).
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                BASE64[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Decodes standard base64 (as WebDriver sends screenshots).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut count) = (0u32, 0);
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        if byte == b'=' {
            break;
        }
        let value = BASE64.iter().position(|&a| a == byte)? as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// Serves the test pages (`tests/pages/*`) and the fetch-streaming client module
/// (`/sse-stream.mjs`, from `examples/clients/`) on a loopback port: an origin other than
/// the hub's, so the pages' requests to the hub are cross-origin.
pub struct PageServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PageServer {
    pub async fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the page server on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local_addr of the page server");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|request| async move {
                    Ok::<_, Infallible>(serve_file(request.uri().path()))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        PageServer { addr, task }
    }

    /// `http://127.0.0.1:<port>`, the pages' origin (give it to the hub's `--cors-origin`).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of page `name` (in `tests/pages/`) with `query` appended (`a=b&c=d`).
    pub fn url(&self, name: &str, query: &str) -> String {
        format!("{}/{name}?{query}", self.origin())
    }
}

fn serve_file(path: &str) -> hyper::Response<Full<Bytes>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = path.trim_start_matches('/');
    let file = if name == "sse-stream.mjs" {
        Some(root.join("examples/clients/sse-stream.mjs"))
    } else if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
    {
        Some(root.join("tests/pages").join(name))
    } else {
        None
    };
    let content_type = match Path::new(name).extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("mjs" | "js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    };
    let builder = hyper::Response::builder().header("cache-control", "no-store");
    match file.map(std::fs::read) {
        Some(Ok(bytes)) => builder
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(bytes))),
        _ => builder
            .status(404)
            .body(Full::new(Bytes::from_static(b"no such test page"))),
    }
    .expect("build a page response")
}
