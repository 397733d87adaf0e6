//! The built `ssehub` binary as a child process on a free loopback port: started with
//! arguments, waited for until `/healthz` answers, signalled with the `kill` command, killed
//! when dropped. Its stdout and stderr go to a log file (or stdout is piped to the test).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::request;

/// The `ssehub` binary cargo built for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_ssehub");
/// Bound on a server answering `/healthz` after spawn.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a one-shot run (`check-config`, `token`, invalid settings).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago and that no other test of this process was given.
///
/// The port is found with a socket that is bound but never listens, with `SO_REUSEADDR`: a
/// child that another test forks at that moment keeps a copy of the socket until its `exec`,
/// and a listening copy would accept (then reset) this test's first connections and keep the
/// server from binding. Tests run in parallel, so a port is handed out once per process.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    for _ in 0..1000 {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(any).expect("bind 127.0.0.1:0");
        let port = socket.local_addr().expect("local_addr").port();
        if HANDED_OUT.lock().expect("port set").insert(port) {
            return port;
        }
    }
    panic!("1000 binds to 127.0.0.1:0 gave only ports handed out before");
}

/// `ssehub args...` with no `SSEHUB_*` or `RUST_LOG` inherited, and `envs` set; killed when
/// the [`Child`] is dropped.
pub fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        let inherited = name.to_str().unwrap_or_default();
        if inherited.starts_with("SSEHUB_") || inherited == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd
}

/// Runs `ssehub args...` (no inherited `SSEHUB_*`) to completion within [`RUN_TIMEOUT`].
pub async fn run(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let child = command(args, envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssehub");
    match tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for ssehub"),
        // Dropping the future drops the child, which kill_on_drop kills.
        Err(_) => panic!("{BIN} {args:?} did not exit within {RUN_TIMEOUT:?}"),
    }
}

/// A running `ssehub`; dropping it kills the process and removes its log file.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Where stdout and stderr go, unless stdout is piped.
    pub log: PathBuf,
}

/// A hub node of a multi-node (Redis) setup is just a server process.
pub type Node = Server;

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Server {
    /// Starts `ssehub --listen 127.0.0.1:<free> args...` and waits until `/healthz` answers.
    /// With `pipe_stdout`, stdout is left in `child.stdout` for the test to read.
    pub async fn start(
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        pipe_stdout: bool,
    ) -> Server {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Server::start_at(addr, name, args, envs, pipe_stdout).await
    }

    /// [`Server::start`] on a given address, e.g. to restart a node where its clients reconnect.
    pub async fn start_at(
        addr: SocketAddr,
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        pipe_stdout: bool,
    ) -> Server {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let listen = addr.to_string();
        let mut all = vec!["--listen", listen.as_str()];
        all.extend_from_slice(args);
        let log = std::env::temp_dir().join(format!(
            "ssehub-process-test-{}-{}-{name}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("create the server log file");
        let stdout = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(file.try_clone().expect("clone log file"))
        };
        let child = command(&all, envs)
            .stdout(stdout)
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn ssehub");
        let mut server = Server { child, addr, log };
        server.wait_healthy().await;
        server
    }

    /// Everything the process wrote to its log file so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "ssehub exited with {status} before serving; output:\n{}",
                    self.log_text()
                );
            }
            if TcpStream::connect(self.addr).await.is_ok() {
                let response = request(self.addr, "GET", "/healthz", &[], b"").await;
                assert_eq!(response.status, 200, "/healthz: {}", response.text());
                assert_eq!(response.json(), serde_json::json!({"status": "ok"}));
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "ssehub on {} did not answer /healthz within {START_TIMEOUT:?}; output:\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`...) with the `kill` command.
    pub async fn signal(&self, signal: &str) {
        super::send_signal(self.child.id(), signal).await;
    }

    /// Waits for the process to exit by `deadline`.
    pub async fn exit_by(&mut self, deadline: Instant, what: &str) -> ExitStatus {
        match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(status) => status.expect("wait for ssehub"),
            Err(_) => panic!("ssehub did not exit {what}; output:\n{}", self.log_text()),
        }
    }
}
