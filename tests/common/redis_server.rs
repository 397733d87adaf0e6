//! A real `redis-server` on a free loopback port, owned by one test: started, killed with
//! SIGKILL, stalled and resumed, restarted on the same port (with or without its data), and
//! queried.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::node::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` process; dropping it kills the process and removes its directory.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    /// Serves TLS only (`rediss://`), with a certificate signed by [`RedisServer::ca_file`].
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without persistence.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// Starts a server with extra arguments, e.g. `["--appendonly", "yes"]` to keep data across
    /// restarts, or `["--requirepass", "secret"]`.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::launch(extra, false).await
    }

    /// Starts a server that speaks only TLS, with a fresh CA and a certificate for 127.0.0.1.
    pub async fn start_tls() -> RedisServer {
        RedisServer::launch(&[], true).await
    }

    async fn launch(extra: &[&str], tls: bool) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("ssehub-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the redis directory");
        let mut server = RedisServer {
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
            child: None,
        };
        if tls {
            super::tls::make_certificates(&server.dir);
        }
        server.spawn().await;
        server
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if self.tls {
            command
                .args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.ca_file())
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.arg("--port").arg(self.port.to_string());
        }
        command
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .expect("spawn redis-server (tests/run.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.try_cmd(&["PING"]).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// SIGKILL: the server vanishes without a goodbye to its clients.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Sends `signal` to the server: `STOP` stalls it with every connection left open (each
    /// command waits), `CONT` resumes it.
    pub async fn signal(&self, signal: &str) {
        super::send_signal(self.child.as_ref().and_then(Child::id), signal).await;
    }

    /// Kills (if running) and starts again on the same port; data survives only with AOF on.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Runs one command with a fresh connection.
    pub async fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = if self.tls {
            let root_cert = std::fs::read(self.ca_file())?;
            redis::Client::build_with_tls(
                self.url_with_auth(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?
        } else {
            redis::Client::open(self.url_with_auth())?
        };
        let mut connection = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query_async(&mut connection).await
    }

    /// Runs one command and converts its answer; panics with the command on error.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let value = self
            .try_cmd(args)
            .await
            .unwrap_or_else(|err| panic!("redis {args:?}: {err}"));
        redis::from_redis_value(value).unwrap_or_else(|err| panic!("redis {args:?}: {err}"))
    }

    fn url_with_auth(&self) -> String {
        match self.extra.iter().position(|a| a == "--requirepass") {
            Some(i) => format!(
                "redis://:{}@127.0.0.1:{}",
                self.extra.get(i + 1).map(String::as_str).unwrap_or(""),
                self.port
            ),
            None => self.url(),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
