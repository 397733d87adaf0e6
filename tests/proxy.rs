//! Debian's real nginx running `deploy/nginx/ssehub.conf` in front of two real ssehub nodes
//! sharing a real Redis: events are not buffered, `Last-Event-ID` and heartbeats pass through,
//! clients of a node killed behind nginx resume on the other one, a dead node is skipped, a
//! stalled client is still the hub's to evict, and nginx's own answers (limits, errors).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::node::{free_port, Server};
use common::redis_server::RedisServer;
use common::{
    assert_error, assert_quiet, metric, publish, publish_ok, publish_raw, request, seq, wait_until,
    SseClient, SseEvent,
};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bound on one step (a stream opening, events arriving, a process starting).
const T: Duration = Duration::from_secs(10);
/// Debian's nginx (package `nginx`, installed by tests/run.sh).
const NGINX: &str = "/usr/sbin/nginx";
/// The configuration under test.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/ssehub.conf");

// ---------------------------------------------------------------------------------------------
// nginx, nodes and Redis

/// nginx serving `deploy/nginx/ssehub.conf` from a private directory; dropping it kills the
/// process and removes the directory.
struct Nginx {
    addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    /// Starts nginx on a free loopback port with the deploy file's upstream pointed at `nodes`,
    /// after `nginx -t` accepted the configuration, and waits until the port answers.
    async fn start(nodes: &[SocketAddr]) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: these tests run Debian's nginx (apt-get install nginx; \
             tests/run.sh installs it)"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = std::env::temp_dir().join(format!(
            "ssehub-nginx-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).expect("create the nginx directory");
        let deploy =
            std::fs::read_to_string(CONFIG).unwrap_or_else(|e| panic!("read {CONFIG}: {e}"));
        let site = dir.join("ssehub.conf");
        std::fs::write(&site, test_site(&deploy, nodes, addr)).expect("write ssehub.conf");
        let main = dir.join("nginx.conf");
        std::fs::write(&main, main_config(&dir, &site)).expect("write nginx.conf");

        let args = |test: bool| {
            let mut args: Vec<String> = Vec::new();
            if test {
                args.push("-t".into());
            }
            for (flag, path) in [("-p", &dir), ("-c", &main), ("-e", &dir.join("error.log"))] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
            args
        };
        let checked = tokio::time::timeout(T, Command::new(NGINX).args(args(true)).output())
            .await
            .unwrap_or_else(|_| panic!("nginx -t did not finish within {T:?}"))
            .expect("run nginx -t");
        assert!(
            checked.status.success(),
            "nginx -t refused the configuration built from {CONFIG}:\n{}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let output = std::fs::File::create(dir.join("output.log")).expect("create output.log");
        let child = Command::new(NGINX)
            .args(args(false))
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone().expect("clone output.log")))
            .stderr(Stdio::from(output))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { addr, dir, child };
        nginx.wait_listening().await;
        nginx
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait nginx") {
                panic!("nginx exited with {status}; {}", self.logs());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {} within {T:?}; {}",
                self.addr,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// nginx's error log and output, for failure messages.
    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "error.log:\n{}\noutput:\n{}",
            read("error.log"),
            read("output.log")
        )
    }
}

/// The deploy file with each `server ssehub-K:8080 ...;` line pointed at the K-th of `nodes`
/// (same parameters; lines beyond `nodes` dropped) and `listen 80;` moved to `listen`.
fn test_site(deploy: &str, nodes: &[SocketAddr], listen: SocketAddr) -> String {
    let mut servers = 0;
    let mut listens = 0;
    let mut out = String::new();
    for line in deploy.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("server ssehub-") {
            let (number, params) = rest
                .split_once(":8080")
                .unwrap_or_else(|| panic!("upstream line {line:?} is not `server ssehub-K:8080`"));
            let k: usize = number
                .parse()
                .unwrap_or_else(|e| panic!("upstream line {line:?}: node number: {e}"));
            servers += 1;
            if let Some(node) = nodes.get(k - 1) {
                out.push_str(&format!("{indent}server {node}{params}\n"));
            }
        } else if trimmed == "listen 80;" {
            listens += 1;
            out.push_str(&format!("{indent}listen {listen};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        servers >= nodes.len(),
        "{CONFIG}: {servers} `server ssehub-K:8080` lines for {} test nodes",
        nodes.len()
    );
    assert_eq!(listens, 1, "{CONFIG}: expected one `listen 80;` line");
    out
}

/// A main configuration around `site`: one process (killed with the test, no worker left
/// behind), every file nginx writes in `dir`.
fn main_config(dir: &Path, site: &Path) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {};
}}
",
        site.display()
    )
}

/// Redis, two nodes on it and nginx in front of them. Fields drop in order: nginx, nodes, Redis.
struct Cluster {
    nginx: Nginx,
    nodes: Vec<Server>,
    _redis: RedisServer,
}

impl Cluster {
    /// Starts everything, the nodes with `args` besides `--redis-url`, and waits until each
    /// node is ready.
    async fn start(name: &str, args: &[&str]) -> Cluster {
        let redis = RedisServer::start().await;
        let url = redis.url();
        let mut node_args = vec!["--redis-url", url.as_str()];
        node_args.extend_from_slice(args);
        let mut nodes = Vec::new();
        for k in 1..=2 {
            let node = Server::start(&format!("{name}-{k}"), &node_args, &[], false).await;
            let addr = node.addr;
            wait_until(T, &format!("node {k} on {addr} is ready"), || async move {
                request(addr, "GET", "/readyz", &[], b"").await.status == 200
            })
            .await;
            nodes.push(node);
        }
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let nginx = Nginx::start(&addrs).await;
        Cluster {
            nginx,
            nodes,
            _redis: redis,
        }
    }

    /// Where clients go.
    fn front(&self) -> SocketAddr {
        self.nginx.addr
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Opens `GET path` with `headers` through `addr`, offering compression as browsers do, and
/// asserts a `200` uncompressed event stream.
async fn subscribe(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
    let mut all = vec![("Accept-Encoding", "gzip, deflate, br")];
    all.extend_from_slice(headers);
    let client = SseClient::connect(addr, path, &all).await;
    assert_eq!(client.status, 200, "GET {path} via {addr} with {headers:?}");
    assert_eq!(
        client.header("content-type"),
        Some("text/event-stream"),
        "GET {path} via {addr}: {:?}",
        client.headers
    );
    assert_eq!(
        client.header("content-encoding"),
        None,
        "GET {path} via {addr}: a compressed stream is held back"
    );
    client
}

/// `(id, data)` of each event.
fn ids_and_data(events: &[SseEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.id.clone(), e.data.clone()))
        .collect()
}

/// The EPOCH of an `EPOCH-SEQ` id.
fn epoch(id: &str) -> &str {
    id.rsplit_once('-')
        .unwrap_or_else(|| panic!("id {id:?} is not EPOCH-SEQ"))
        .0
}

/// The output of a spawned task, re-raising its panic as the test's own.
async fn joined<T>(task: JoinHandle<T>) -> T {
    match task.await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// Open event streams on the node at `addr`.
async fn streams_on(addr: SocketAddr) -> f64 {
    metric(addr, "ssehub_subscribers").await
}

// ---------------------------------------------------------------------------------------------
// 1. Not buffered

#[tokio::test(flavor = "multi_thread")]
async fn events_are_not_buffered_by_nginx() {
    let cluster = Cluster::start("unbuffered", &["--retry", "3s"]).await;
    let front = cluster.front();
    let mut delays = Vec::new();
    // Best of up to 5 fresh streams, so one scheduling hiccup does not decide.
    for attempt in 1..=5 {
        let channel = format!("latency-{attempt}");
        let mut client = subscribe(front, &format!("/events/{channel}"), &[]).await;
        // The preamble comes through before anything is published.
        if client.comments() == 0 {
            client.wait_comment(T).await;
        }
        assert_eq!(
            client.retry(),
            Some(3000),
            "retry: of the preamble via nginx"
        );
        assert_eq!(client.bytes_read(), ":ok\nretry: 3000\n\n".len());

        let started = Instant::now();
        let publisher =
            tokio::spawn(
                async move { publish_ok(front, &channel, &format!("first-{attempt}")).await },
            );
        let event = client
            .next_event(T)
            .await
            .expect("stream ended before the first event");
        let delay = started.elapsed();
        let id = joined(publisher).await;
        assert_eq!(
            ids_and_data(&[event]),
            [(id, format!("first-{attempt}"))],
            "first event via nginx"
        );
        delays.push(delay);
        if delay < Duration::from_millis(100) {
            break;
        }
    }
    let best = delays.iter().min().expect("at least one attempt");
    assert!(
        *best < Duration::from_millis(100),
        "no first event arrived through nginx within 100 ms of its publish: {delays:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Last-Event-ID

#[tokio::test(flavor = "multi_thread")]
async fn last_event_id_passes_through_nginx() {
    let cluster = Cluster::start("resume", &[]).await;
    let front = cluster.front();
    let mut published = Vec::new();
    for n in 1..=5 {
        let data = format!("event-{n}");
        published.push((publish_ok(front, "resume", &data).await, data));
    }
    let cursor = published[1].0.clone();
    // Two resumes held open at once: nginx (least_conn) sends them to different nodes.
    let mut resumed = Vec::new();
    for _ in 0..2 {
        let mut client = subscribe(front, "/events/resume", &[("Last-Event-ID", &cursor)]).await;
        let events = client.events(3, T).await;
        assert_eq!(
            ids_and_data(&events),
            published[2..],
            "resume after {cursor} via nginx"
        );
        resumed.push(client);
    }
    for node in &cluster.nodes {
        let addr = node.addr;
        wait_until(
            T,
            &format!("node {addr} serves one of the streams"),
            || async move { streams_on(addr).await == 1.0 },
        )
        .await;
    }
    // Exactly the missed events: nothing more until the next publish, which arrives live.
    for client in &mut resumed {
        assert_quiet(client, "after the missed events").await;
    }
    let live = publish_ok(front, "resume", "event-6").await;
    for client in &mut resumed {
        let events = client.events(1, T).await;
        assert_eq!(
            ids_and_data(&events),
            [(live.clone(), "event-6".to_string())]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A node killed behind nginx

/// Streams through nginx at once.
const CLIENTS: usize = 20;
/// Events published through nginx, the node being killed after [`KILL_AFTER`] of them.
const EVENTS: usize = 300;
const KILL_AFTER: usize = 100;
/// Data of the event published last.
const END: &str = "end";

/// What one client received, and how often it had to reconnect.
struct ClientRun {
    events: Vec<SseEvent>,
    reconnects: usize,
}

/// Reads `client`'s stream until the [`END`] event. When the stream breaks, reconnects through
/// `front` as EventSource does: after the `retry:` delay, sending the last event id it read.
async fn follow(
    front: SocketAddr,
    path: &str,
    mut client: SseClient,
    with_events: Arc<AtomicUsize>,
    deadline: Instant,
) -> ClientRun {
    let mut events = Vec::new();
    let mut reconnects = 0;
    let mut last_id = String::new();
    loop {
        while let Some(event) = client
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if events.is_empty() {
                with_events.fetch_add(1, Ordering::SeqCst);
            }
            let end = event.data == END;
            events.push(event);
            if end {
                return ClientRun { events, reconnects };
            }
        }
        if !client.last_event_id().is_empty() {
            last_id = client.last_event_id().to_string();
        }
        assert!(
            !last_id.is_empty(),
            "stream via nginx ended ({:?}) before its first event",
            client.end_reason()
        );
        reconnects += 1;
        assert!(reconnects <= 3, "reconnected {reconnects} times");
        let retry = client.retry().expect("a retry: in the preamble");
        tokio::time::sleep(Duration::from_millis(retry)).await;
        // EventSource gives up for good on a status other than 200: nginx must find the live
        // node.
        client = subscribe(front, path, &[("Last-Event-ID", &last_id)]).await;
    }
}

/// Publishes `data` through `front`; a `502` (the request was in flight to the killed node, so
/// it may or may not have been published) is retried. Returns the receipt id and the retries.
async fn publish_retrying(front: SocketAddr, channel: &str, data: &str) -> (String, usize) {
    for retries in 0..5 {
        let response = publish(front, json!({"channel": channel, "data": data})).await;
        match response.status {
            200 => {
                let id = response.json()["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no id in {}", response.text()))
                    .to_string();
                return (id, retries);
            }
            502 => tokio::time::sleep(Duration::from_millis(20)).await,
            status => panic!("publish {data:?} via nginx: {status} {}", response.text()),
        }
    }
    panic!("publish {data:?} via nginx: 502 five times");
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_survive_a_node_killed_behind_nginx() {
    let mut cluster = Cluster::start("failover", &["--retry", "100ms"]).await;
    let front = cluster.front();
    let path = "/events/failover";
    let deadline = Instant::now() + Duration::from_secs(20);

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(subscribe(front, path, &[]).await);
    }
    let victim = cluster.nodes[0].addr;
    let survivor = cluster.nodes[1].addr;
    for addr in [victim, survivor] {
        wait_until(T, &format!("half the streams on {addr}"), || async move {
            streams_on(addr).await == (CLIENTS / 2) as f64
        })
        .await;
    }

    let with_events = Arc::new(AtomicUsize::new(0));
    let runs: Vec<JoinHandle<ClientRun>> = clients
        .into_iter()
        .map(|client| {
            let with_events = with_events.clone();
            tokio::spawn(async move { follow(front, path, client, with_events, deadline).await })
        })
        .collect();
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let published = published.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            let mut retries = 0;
            let numbers = (0..EVENTS).map(|n| n.to_string());
            for data in numbers.chain([END.to_string()]) {
                let (id, retried) = publish_retrying(front, "failover", &data).await;
                receipts.push((id, data));
                retries += retried;
                published.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (receipts, retries)
        })
    };

    wait_until(
        T,
        &format!("{KILL_AFTER} events published and every client got one"),
        || {
            let (published, with_events) = (published.clone(), with_events.clone());
            async move {
                published.load(Ordering::SeqCst) >= KILL_AFTER
                    && with_events.load(Ordering::SeqCst) == CLIENTS
            }
        },
    )
    .await;
    cluster.nodes[0].signal("KILL").await;
    cluster.nodes[0]
        .exit_by(Instant::now() + T, "after SIGKILL")
        .await;
    assert!(
        published.load(Ordering::SeqCst) < EVENTS,
        "the node died after publishing ended"
    );

    let (receipts, retries) = joined(publisher).await;
    let mut results = Vec::new();
    for run in runs {
        results.push(joined(run).await);
    }

    // Every acknowledged event once, in order, on one epoch; the END event is the newest.
    let (end_id, _) = receipts.last().expect("receipts");
    let last_seq = seq(end_id);
    assert!(
        receipts.windows(2).all(|w| seq(&w[0].0) < seq(&w[1].0)),
        "receipts out of order: {receipts:?}"
    );
    let dense: Vec<u64> = (1..=last_seq).collect();
    for (i, run) in results.iter().enumerate() {
        let seqs: Vec<u64> = run.events.iter().map(|e| seq(&e.id)).collect();
        assert_eq!(seqs, dense, "client {i}: seqs (each event once, in order)");
        assert!(
            run.events.iter().all(|e| epoch(&e.id) == epoch(end_id)),
            "client {i}: ids of another epoch"
        );
        for (id, data) in &receipts {
            let got = &run.events[(seq(id) - 1) as usize];
            assert_eq!((&got.id, &got.data), (id, data), "client {i}");
        }
        assert_eq!(
            ids_and_data(&run.events),
            ids_and_data(&results[0].events),
            "client {i} and client 0"
        );
    }
    // Exactly the killed node's clients reconnected, once each, all to the survivor.
    let reconnected = results.iter().filter(|r| r.reconnects > 0).count();
    assert!(
        results.iter().all(|r| r.reconnects <= 1),
        "a client reconnected more than once"
    );
    assert_eq!(reconnected, CLIENTS / 2, "clients that reconnected");
    eprintln!(
        "{reconnected} clients resumed through nginx; {EVENTS} events, {retries} publishes retried \
         after a 502"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Heartbeats

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_pass_through_nginx() {
    let cluster = Cluster::start("heartbeat", &["--heartbeat", "300ms"]).await;
    let mut client = subscribe(cluster.front(), "/events/quiet", &[]).await;
    if client.comments() == 0 {
        client.wait_comment(T).await;
    }
    let preamble = client.bytes_read();
    // Nothing is published: two more comments can only be heartbeats.
    client.wait_comment(T).await;
    client.wait_comment(T).await;
    assert_eq!(
        client.bytes_read(),
        preamble + 2 * ":\n\n".len(),
        "only heartbeats after the preamble"
    );
    assert_quiet(&mut client, "no events were published").await;
}

// ---------------------------------------------------------------------------------------------
// 5. A dead node is skipped

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_node_is_skipped() {
    let mut cluster = Cluster::start("skip", &[]).await;
    let front = cluster.front();
    // Killed before any request went through nginx, so no kept-alive connection to it exists:
    // nginx tries it (until max_fails marks it down), is refused, and must pass the request on.
    cluster.nodes[0].signal("KILL").await;
    cluster.nodes[0]
        .exit_by(Instant::now() + T, "after SIGKILL")
        .await;
    let mut published = Vec::new();
    for n in 1..=4 {
        let data = format!("event-{n}");
        published.push((publish_ok(front, "skip", &data).await, data));
    }
    for _ in 0..4 {
        let mut client =
            subscribe(front, "/events/skip", &[("Last-Event-ID", &published[0].0)]).await;
        let events = client.events(3, T).await;
        assert_eq!(ids_and_data(&events), published[1..], "resume via nginx");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Slow clients

/// Data of one big event, under the hub's 64 KiB event limit.
const BIG_EVENT: usize = 60 * 1024;
/// Big events per publish, under the 1 MiB body limit.
const PER_BATCH: usize = 15;
/// Published to a stalled client before concluding that something absorbs the backlog.
const ABSORBED: usize = 120 << 20;

/// Evictions for lag or write timeout, on every node.
async fn evictions(nodes: &[Server]) -> f64 {
    let mut total = 0.0;
    for node in nodes {
        for reason in ["lagged", "write_timeout"] {
            let series = format!("ssehub_evictions_total{{reason=\"{reason}\"}}");
            total += metric(node.addr, &series).await;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_behind_nginx_is_still_evicted_by_the_hub() {
    let cluster = Cluster::start("stalled", &["--max-lag", "50", "--history-size", "100"]).await;
    let front = cluster.front();
    // Never read. Unbuffered, nginx stops reading the node once the client's socket is full,
    // so the node sees the lag; a buffering proxy would spool the backlog to disk instead.
    let _stalled = subscribe(front, "/events/stalled", &[]).await;
    // Read: each batch is published only once it got through, so no reader falls behind on a
    // burst (least_conn puts this stream on the other node).
    let mut reader = subscribe(front, "/events/stalled", &[]).await;
    let data = "x".repeat(BIG_EVENT);
    let batch: Vec<_> = (0..PER_BATCH)
        .map(|_| json!({"channel": "stalled", "data": data}))
        .collect();
    let batch = json!({ "events": batch });
    let mut sent = 0;
    while evictions(&cluster.nodes).await == 0.0 {
        assert!(
            sent < ABSORBED,
            "{} MiB published to a stalled client through nginx and the hub never evicted it: \
             something between them absorbs the backlog",
            sent >> 20
        );
        let response = publish(front, batch.clone()).await;
        assert_eq!(response.status, 200, "batch via nginx: {}", response.text());
        for _ in 0..PER_BATCH {
            let event = tokio::time::timeout(T, reader.next_event(2 * T))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the reading client got no event within {T:?} ({} MiB published): \
                         nginx holds events back",
                        sent >> 20
                    )
                })
                .expect("the reading client's stream ended");
            assert!(event.data == data, "the reading client got other data");
        }
        sent += PER_BATCH * BIG_EVENT;
    }
    eprintln!("stalled client evicted after {} MiB", sent >> 20);
}

// ---------------------------------------------------------------------------------------------
// 7. nginx's own answers

#[tokio::test(flavor = "multi_thread")]
async fn nginx_limits_bodies_hides_metrics_and_reports_dead_nodes() {
    let mut cluster = Cluster::start("limits", &[]).await;
    let front = cluster.front();

    let health = request(front, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200, "/healthz via nginx: {}", health.text());
    assert_eq!(health.json(), json!({"status": "ok"}));

    let metrics = request(front, "GET", "/metrics", &[], b"").await;
    assert_error(&metrics, 403, "/metrics via nginx");
    let direct = request(cluster.nodes[0].addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(direct.status, 200, "/metrics on a node directly");

    // Under 1 MiB goes through (data up to the hub's 64 KiB event limit); over is nginx's 413.
    let event = "x".repeat(60 * 1024);
    let accepted = publish_raw(front, "big", &event).await;
    assert_eq!(
        accepted.status,
        200,
        "60 KiB via nginx: {}",
        accepted.text()
    );
    let too_big = "x".repeat(1024 * 1024 + 1);
    let refused = publish_raw(front, "big", &too_big).await;
    assert_error(&refused, 413, "body over 1 MiB via nginx");
    assert_eq!(
        refused.json()["error"],
        "request body larger than 1 MiB",
        "nginx, not the hub, refused it"
    );

    // No node left: a JSON 502, not an HTML page.
    for node in &mut cluster.nodes {
        node.signal("KILL").await;
        node.exit_by(Instant::now() + T, "after SIGKILL").await;
    }
    let response = publish_raw(front, "big", "x").await;
    assert_error(&response, 502, "publish via nginx with every node down");
}
