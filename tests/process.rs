//! The built `ssehub` binary as a child process: signals, configuration sources, JSON logs and
//! the default setup.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::node::{free_port, run, Server};
use common::{publish_ok, publish_raw, SseClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// 6. Graceful shutdown on signals

async fn signal_ends_streams_and_exits_zero(signal: &str) {
    let shutdown_timeout = Duration::from_secs(5);
    let mut server = Server::start(
        &format!("sig{signal}"),
        &["--shutdown-timeout", "5s", "--retry", "3s"],
        &[],
        false,
    )
    .await;
    let addr = server.addr;
    let mut clients = Vec::new();
    for i in 0..3 {
        let client = SseClient::connect(addr, "/events/news", &[]).await;
        assert_eq!(client.status, 200, "subscriber {i}");
        clients.push(client);
    }
    let response = publish_raw(addr, "news", "before").await;
    assert_eq!(response.status, 200, "{}", response.text());
    for client in &mut clients {
        let event = client.next_event(Duration::from_secs(10)).await;
        assert_eq!(event.map(|e| e.data).as_deref(), Some("before"));
        assert_eq!(
            client.retry(),
            Some(3000),
            "initial retry: is the --retry value"
        );
    }

    let signalled = Instant::now();
    server.signal(signal).await;
    for (i, client) in clients.iter_mut().enumerate() {
        client.expect_end(shutdown_timeout).await;
        let retry = client.retry();
        assert!(
            retry.is_some_and(|ms| (100..=2000).contains(&ms)),
            "subscriber {i}: expected a new retry: 100..=2000 before the end after SIG{signal}, \
             last retry seen {retry:?}"
        );
        assert_eq!(
            client.end_reason(),
            Some("end of body"),
            "subscriber {i}: the stream ends cleanly (final chunk)"
        );
    }
    let status = server
        .exit_by(
            signalled + shutdown_timeout,
            &format!("within the shutdown timeout after SIG{signal}"),
        )
        .await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}: {status}; output:\n{}",
        server.log_text()
    );
    println!("SIG{signal}: exited 0 after {:?}", signalled.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_retry_and_exits_zero() {
    signal_ends_streams_and_exits_zero("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_streams_with_retry_and_exits_zero() {
    signal_ends_streams_and_exits_zero("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_stalled_subscriber_exits_within_shutdown_timeout() {
    const EVENTS: usize = 1000;
    const SIZE: usize = 16 * 1024;
    let shutdown_timeout = Duration::from_secs(2);
    let mut server = Server::start(
        "stalled",
        &[
            "--shutdown-timeout",
            "2s",
            "--max-lag",
            "1000000",
            "--history-size",
            "100000",
            "--history-bytes",
            "1073741824",
            "--write-timeout",
            "60s",
        ],
        &[],
        false,
    )
    .await;
    let addr = server.addr;
    // A subscriber that never reads: its socket fills up and its body is no longer polled.
    let mut stalled = common::raw_connect(addr).await;
    let head = format!("GET /events/news HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes())
        .await
        .expect("send the stalled request");
    let mut healthy = SseClient::connect(addr, "/events/news", &[]).await;
    assert_eq!(healthy.status, 200);
    common::wait_until(
        Duration::from_secs(5),
        "both subscribers are open",
        || async { common::metric(addr, "ssehub_subscribers").await == 2.0 },
    )
    .await;
    let reader = tokio::spawn(async move {
        let mut count = 0;
        while healthy.next_event(Duration::from_secs(30)).await.is_some() {
            count += 1;
        }
        (healthy, count)
    });
    let data = "x".repeat(SIZE);
    for i in 0..EVENTS {
        let response = publish_raw(addr, "news", &data).await;
        assert_eq!(response.status, 200, "publish {i}: {}", response.text());
    }
    assert_eq!(
        common::metric(addr, "ssehub_subscribers").await,
        2.0,
        "the stalled subscriber must still be connected (not evicted) for this test"
    );

    let signalled = Instant::now();
    server.signal("TERM").await;
    let (healthy, count) = tokio::time::timeout(shutdown_timeout + Duration::from_secs(5), reader)
        .await
        .expect("healthy stream did not end after SIGTERM")
        .expect("healthy reader task");
    assert_eq!(
        count, EVENTS,
        "the healthy subscriber got every event before the end"
    );
    let retry = healthy.retry();
    assert!(
        retry.is_some_and(|ms| (100..=2000).contains(&ms)),
        "healthy subscriber: a shutdown retry: 100..=2000 arrived, last retry {retry:?}"
    );
    assert_eq!(healthy.end_reason(), Some("end of body"));
    let grace = Duration::from_secs(2);
    let status = server
        .exit_by(
            signalled + shutdown_timeout + grace,
            "within --shutdown-timeout 2s (+2s grace) with a stalled subscriber",
        )
        .await;
    println!(
        "SIGTERM with a stalled subscriber: exited {status} after {:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
}

// ---------------------------------------------------------------------------------------------
// 7. Configuration: flags, environment, TOML file

/// Runs `args` expecting success and returns stdout (the Debug of the config for check-config).
async fn effective_config(args: &[&str], envs: &[(&str, &str)]) -> String {
    let output = run(args, envs).await;
    assert!(
        output.status.success(),
        "ssehub {args:?} (env {envs:?}) failed with {}; stderr: {}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn assert_has(config: &str, needle: &str, what: &str) {
    assert!(
        config.contains(needle),
        "{what}: expected {needle:?} in the effective config:\n{config}"
    );
}

/// A TOML file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("ssehub-process-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn check_config_takes_flags_after_the_subcommand() {
    // The documented form: `ssehub check-config --history-size 7`.
    let config = effective_config(&["check-config", "--history-size", "7"], &[]).await;
    assert_has(&config, "history_size: 7,", "flag after check-config");
}

#[tokio::test]
async fn check_config_takes_flags_before_the_subcommand() {
    let config = effective_config(&["--history-size", "7", "check-config"], &[]).await;
    assert_has(&config, "history_size: 7,", "flag before check-config");
    assert_has(&config, "heartbeat: 15s,", "default heartbeat");
}

#[tokio::test]
async fn environment_is_honoured() {
    let config = effective_config(&["check-config"], &[("SSEHUB_HISTORY_SIZE", "9")]).await;
    assert_has(&config, "history_size: 9,", "SSEHUB_HISTORY_SIZE=9");
    let config = effective_config(
        &["--history-size", "7", "check-config"],
        &[("SSEHUB_HISTORY_SIZE", "9")],
    )
    .await;
    assert_has(&config, "history_size: 7,", "flag wins over env");
}

#[tokio::test]
async fn toml_file_is_honoured_below_env_and_flags() {
    let file = TempFile::new("config.toml", "history-size = 11\nheartbeat = \"2s\"\n");
    let config = effective_config(&["--config", file.path(), "check-config"], &[]).await;
    assert_has(&config, "history_size: 11,", "history-size from the file");
    assert_has(&config, "heartbeat: 2s,", "heartbeat from the file");

    let config = effective_config(
        &[
            "--config",
            file.path(),
            "--history-size",
            "7",
            "check-config",
        ],
        &[],
    )
    .await;
    assert_has(&config, "history_size: 7,", "flag wins over the file");
    assert_has(&config, "heartbeat: 2s,", "the file still gives heartbeat");

    let config = effective_config(
        &["--config", file.path(), "check-config"],
        &[("SSEHUB_HISTORY_SIZE", "9")],
    )
    .await;
    assert_has(&config, "history_size: 9,", "env wins over the file");

    let config = effective_config(&["check-config"], &[("SSEHUB_CONFIG", file.path())]).await;
    assert_has(&config, "history_size: 11,", "file named by SSEHUB_CONFIG");
}

/// `args` must exit with code 2 and name `setting` on stderr, both for `check-config` and
/// when serving.
async fn assert_rejected(args: &[&str], envs: &[(&str, &str)], setting: &str) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut serve = vec!["--listen", listen.as_str()];
    serve.extend_from_slice(args);
    let mut check = args.to_vec();
    check.push("check-config");
    for args in [check, serve] {
        let output = run(&args, envs).await;
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "ssehub {args:?} (env {envs:?}): expected exit code 2, got {}; stderr: {stderr}",
            output.status
        );
        assert!(
            stderr.contains(setting),
            "ssehub {args:?}: stderr should name {setting:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn invalid_settings_exit_2_naming_the_setting() {
    assert_rejected(&["--heartbeat", "soon"], &[], "heartbeat").await;
    assert_rejected(&["--history-size", "0"], &[], "history-size").await;
    assert_rejected(&["--log-format", "yaml"], &[], "log-format").await;
    assert_rejected(&[], &[("SSEHUB_HEARTBEAT", "soon")], "heartbeat").await;
    assert_rejected(&[], &[("SSEHUB_MAX_LAG", "0")], "max-lag").await;
    assert_rejected(&["--workers", "1025"], &[], "workers").await;
    let file = TempFile::new("typo.toml", "histroy-size = 3\n");
    assert_rejected(&["--config", file.path()], &[], "histroy-size").await;
    let file = TempFile::new("bad-duration.toml", "write-timeout = \"later\"\n");
    assert_rejected(&["--config", file.path()], &[], "write-timeout").await;
}

// ---------------------------------------------------------------------------------------------
// 8. JSON logs

/// Reads one stdout line by `deadline`; `None` at EOF.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    deadline: Instant,
) -> Option<String> {
    match tokio::time::timeout_at(deadline, lines.next_line()).await {
        Ok(line) => line.expect("read ssehub stdout"),
        Err(_) => panic!("no stdout line from ssehub in time"),
    }
}

fn assert_json_object(line: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
    assert!(
        value.is_object(),
        "stdout line is not a JSON object: {line}"
    );
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_json_lines() {
    let mut server = Server::start(
        "json",
        &["--log-format", "json"],
        &[("RUST_LOG", "info")],
        true,
    )
    .await;
    let port = server.addr.port().to_string();
    let stdout = server.child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let line = next_line(&mut lines, deadline)
            .await
            .unwrap_or_else(|| panic!("stdout ended before a listening line: {seen:?}"));
        assert_json_object(&line);
        seen.push(line.clone());
        if line.contains("listening") {
            assert!(
                line.contains(&port),
                "listening line names the address: {line}"
            );
            break;
        }
    }
    server.signal("TERM").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(line) = next_line(&mut lines, deadline).await {
        assert_json_object(&line);
        seen.push(line);
    }
    let status = server.exit_by(deadline, "within 10s of SIGTERM").await;
    assert_eq!(status.code(), Some(0), "{seen:#?}");
    assert!(
        seen.len() >= 2,
        "expected listening and shutdown lines: {seen:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Defaults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_settings_publish_reaches_subscriber() {
    let mut server = Server::start("default", &[], &[], false).await;
    let addr = server.addr;
    let mut client = SseClient::connect(addr, "/events/news", &[]).await;
    assert_eq!(client.status, 200);
    assert_eq!(
        client.header("content-type"),
        Some("text/event-stream"),
        "{:?}",
        client.headers
    );
    let response = publish_raw(addr, "news", "hi").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let event = client
        .next_event(Duration::from_secs(10))
        .await
        .expect("stream ended before the event");
    assert_eq!(event.data, "hi");
    assert_eq!(event.event, "message");
    assert_eq!(client.retry(), Some(3000), "default retry is 3s");
    assert_eq!(response.json()["id"].as_str(), Some(event.id.as_str()));
    server.signal("TERM").await;
    client.expect_end(Duration::from_secs(10)).await;
    let status = server
        .exit_by(
            Instant::now() + Duration::from_secs(10),
            "within 10s of SIGTERM",
        )
        .await;
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
}

// ---------------------------------------------------------------------------------------------
// Open-file limit

/// Soft and hard "Max open files" of a process, from `/proc/<pid>/limits`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut values = line["Max open files".len()..].split_whitespace();
    let soft = values.next().expect("soft limit").to_owned();
    let hard = values.next().expect("hard limit").to_owned();
    (soft, hard)
}

#[tokio::test]
async fn soft_open_file_limit_is_raised_to_the_hard_one_at_start() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Started with a soft limit of 256, as some container runtimes do (1024 there).
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""])
        .args([common::node::BIN, "--listen", &listen])
        .args(["--max-connections", "1000000000"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ssehub under sh");
    let pid = child.id().expect("pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut log = Vec::new();
    let deadline = Instant::now() + common::node::START_TIMEOUT;
    while !log.iter().any(|l: &String| l.contains("ssehub listening")) {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => log.push(line),
            other => panic!("no 'ssehub listening' line ({other:?}); log: {log:?}"),
        }
    }
    let (soft, hard) = open_file_limits(pid);
    assert_ne!(soft, "256", "the soft limit was not raised");
    assert_eq!(soft, hard, "soft limit raised to the hard limit");
    assert!(
        log.iter()
            .any(|l| l.contains("open-file limit is below max-connections")),
        "a max-connections above the limit is warned about: {log:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Worker threads

/// Threads of a process named as the hub names its runtime's threads.
fn runtime_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read tasks")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "ssehub-worker")
        .count()
}

#[tokio::test]
async fn workers_setting_sizes_the_runtime() {
    let one = Server::start("workers-1", &["--workers", "1"], &[], false).await;
    let three = Server::start("workers-3", &[], &[("SSEHUB_WORKERS", "3")], false).await;
    let pid = |server: &Server| server.child.id().expect("pid");
    assert_eq!(runtime_threads(pid(&one)), 1, "--workers 1");
    assert_eq!(runtime_threads(pid(&three)), 3, "SSEHUB_WORKERS=3");

    // One worker still serves a subscriber and a publisher at once.
    let mut client = SseClient::connect(one.addr, "/events/w", &[]).await;
    publish_ok(one.addr, "w", "one").await;
    let event = client
        .next_event(Duration::from_secs(5))
        .await
        .expect("an event");
    assert_eq!(event.data, "one");
}
