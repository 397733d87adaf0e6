//! Scenarios: the options every scenario shares, and the steps they are built from (spawn
//! subscribers, wait for them, publish, drain, tally, sample the server).

pub mod churn;
pub mod fanout;
pub mod idle;
pub mod replay;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::procstat::{self, Sample, Selector};
use crate::publisher::{Published, Style};
use crate::report::{Machine, ProcessReport, Report, ServerReport, TargetReport, ToolReport};
use crate::subscriber::{self, Outcome, Shared, Spec};
use crate::target::{self, Target};
use crate::tracker::Counts;

/// Options every scenario takes.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct Common {
    /// Subscriber URL template, e.g. `http://127.0.0.1:8080/events/{channel}`; repeat for
    /// several nodes (subscribers are spread round-robin).
    #[arg(long = "sub-url", required = true)]
    pub sub_urls: Vec<String>,
    /// Publisher URL template, e.g. `http://127.0.0.1:8080/publish/{channel}`; repeat for
    /// several nodes (each channel always goes through the same one).
    #[arg(long = "pub-url")]
    pub pub_urls: Vec<String>,
    /// `raw`: the payload is the POST body; `json`: `{"channel","data"}` (ssehub's `/publish`).
    #[arg(long, value_enum, default_value = "raw")]
    pub pub_style: Style,
    /// Server process ids (with all their descendants), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Every process whose `/proc/<pid>/comm` is this name is the server (e.g. `nginx`).
    #[arg(long)]
    pub server_process_name: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Name of the server under test in the report.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Threads running subscribers (the publisher always has one more of its own).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Connection attempts in flight at once. Above the server's listen backlog (128 for a
    /// Rust std/tokio listener, 511 for nginx) the kernel drops SYNs and clients wait a 1 s
    /// retransmit: raise it to test exactly that.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Seconds to wait for one connection's response head.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Keep-alive publishing connections per publisher URL.
    #[arg(long, default_value_t = 4)]
    pub pub_connections: usize,
    /// Seconds without a new delivery after which the run stops waiting for stragglers.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Prefix of channel names (default: unique per run, so runs never see each other's events).
    #[arg(long)]
    pub channel_prefix: Option<String>,
}

impl Common {
    /// Defaults for a library caller: one server URL pair, everything else as on the command line.
    pub fn new(sub_url: &str, pub_url: &str) -> Common {
        Common {
            sub_urls: vec![sub_url.to_string()],
            pub_urls: vec![pub_url.to_string()],
            pub_style: Style::Raw,
            server_pid: Vec::new(),
            server_process_name: None,
            json: None,
            label: "server".into(),
            payload_bytes: 100,
            threads: 1,
            connect_concurrency: 128,
            connect_timeout: 10.0,
            pub_connections: 4,
            drain_timeout: 5.0,
            channel_prefix: None,
        }
    }

    fn selector(&self) -> Selector {
        Selector {
            pids: self.server_pid.clone(),
            name: self.server_process_name.clone(),
        }
    }
}

/// Runs `scenario` on a runtime with `threads` subscriber threads and returns its report.
pub fn block_on<F>(threads: usize, scenario: F) -> Result<Report, String>
where
    F: Future<Output = Result<Report, String>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|err| format!("runtime: {err}"))?;
    runtime.block_on(scenario)
}

/// What every scenario sets up first.
pub(crate) struct Setup {
    pub common: Common,
    pub subs: Vec<Target>,
    pub pubs: Vec<Target>,
    pub selector: Selector,
    pub channel_names: Vec<String>,
}

impl Setup {
    /// Parses the targets, names `channels` channels and checks that `sockets` connections fit
    /// under the open-file limit.
    pub fn new(
        common: &Common,
        channels: usize,
        sockets: usize,
        needs_publisher: bool,
    ) -> Result<Setup, String> {
        let subs = target::parse_all(&common.sub_urls)?;
        let pubs = target::parse_all(&common.pub_urls)?;
        if subs.is_empty() {
            return Err("give at least one --sub-url".into());
        }
        if needs_publisher && pubs.is_empty() {
            return Err("give at least one --pub-url".into());
        }
        if common.pub_style == Style::Raw && pubs.iter().any(|t| !t.has_channel()) {
            return Err("--pub-style raw needs {channel} in every --pub-url".into());
        }
        if channels == 0 {
            return Err("give at least one channel".into());
        }
        if common.threads == 0 || common.threads > 64 {
            return Err("--threads must be 1 to 64".into());
        }
        procstat::check_open_files(sockets + common.pub_connections * pubs.len())?;
        let prefix = common.channel_prefix.clone().unwrap_or_else(|| {
            format!(
                "lt-{:x}{:x}-",
                std::process::id(),
                crate::payload::now_us() % 0xFFFF_FFFF
            )
        });
        Ok(Setup {
            common: common.clone(),
            subs,
            pubs,
            selector: common.selector(),
            channel_names: (0..channels).map(|c| format!("{prefix}{c}")).collect(),
        })
    }

    /// The spec of subscriber `index`: channel `channel`, target `index % targets`.
    pub fn spec(&self, index: usize, channel: usize) -> Spec {
        let target_index = index % self.subs.len();
        let target = &self.subs[target_index];
        Spec {
            index,
            target: target_index,
            addr: target.addr,
            host: Arc::from(target.host.as_str()),
            path: target.path_for(&self.channel_names[channel]),
            last_event_id: None,
            complete_at: None,
            lifetime: None,
            connect_timeout: Duration::from_secs_f64(self.common.connect_timeout.max(0.1)),
            attempts: 3,
        }
    }

    /// A publishing plan for this setup.
    pub fn plan(&self, rate: f64, events: u64, first_seq: u64) -> crate::publisher::Plan {
        crate::publisher::Plan {
            targets: self.pubs.clone(),
            style: self.common.pub_style,
            channels: self.channel_names.clone(),
            rate,
            events,
            first_seq,
            payload_bytes: self.common.payload_bytes,
            connections: self.common.pub_connections,
            timeout: Duration::from_secs(10),
        }
    }

    /// A report with the fields every scenario fills the same way.
    pub fn report(&self, scenario: &str, params: serde_json::Value, subscribers: usize) -> Report {
        Report {
            scenario: scenario.into(),
            label: self.common.label.clone(),
            params,
            subscribers: subscribers as u64,
            channels: self.channel_names.len() as u64,
            machine: Machine::here(),
            tool: ToolReport {
                threads: self.common.threads,
                ..ToolReport::default()
            },
            ..Report::default()
        }
    }

    /// Server and tool samples at the start of a measurement window.
    pub fn window_start(&self) -> Window {
        Window {
            server: (!self.selector.is_empty()).then(|| self.selector.sample()),
            tool: procstat::own(),
            started: Instant::now(),
        }
    }

    /// Fills the server and tool figures of `report` for the window that began at `window`.
    pub fn window_end(&self, window: &Window, report: &mut Report) {
        let elapsed = window.started.elapsed().as_secs_f64().max(1e-6);
        let tool = procstat::own();
        report.tool.cpu_s = (tool.cpu_s() - window.tool.cpu_s()).max(0.0);
        report.tool.cores = report.tool.cpu_s / elapsed;
        report.tool.rss_kib = tool.rss_kib();
        if let Some(before) = &window.server {
            let after = self.selector.sample();
            let per_process = after.cpu_since(before);
            let cpu_s: f64 = per_process.iter().map(|(_, cpu)| cpu).sum();
            report.server = Some(ServerReport {
                cpu_s,
                cores: cpu_s / elapsed,
                rss_before_kib: before.rss_kib(),
                rss_after_kib: after.rss_kib(),
                processes: per_process
                    .iter()
                    .map(|(process, cpu)| ProcessReport::new(process, *cpu))
                    .collect(),
            });
            if report.deliveries > 0 && cpu_s > 0.0 {
                report.deliveries_per_server_cpu_s = Some(report.deliveries as f64 / cpu_s);
                report.server_cpu_us_per_delivery = Some(cpu_s * 1e6 / report.deliveries as f64);
            }
        }
    }
}

/// Samples taken when a measurement window opened.
pub(crate) struct Window {
    pub server: Option<Sample>,
    pub tool: Sample,
    pub started: Instant,
}

/// Spawns one subscriber task.
pub(crate) fn spawn(spec: Spec, shared: &Arc<Shared>) -> JoinHandle<Outcome> {
    tokio::spawn(subscriber::run(spec, shared.clone()))
}

/// Polls `done` every 10 ms until it holds or `limit` passes; returns whether it held.
pub(crate) async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every subscriber either has its stream open or gave up.
pub(crate) async fn wait_connected(
    shared: &Shared,
    handles: &[JoinHandle<Outcome>],
    common: &Common,
) -> Result<(), String> {
    // Every connect may take its timeout, `connect_concurrency` at a time, three attempts each.
    let rounds = handles.len().div_ceil(common.connect_concurrency.max(1)) as f64;
    let limit = Duration::from_secs_f64((common.connect_timeout * 3.0 * rounds).clamp(5.0, 600.0));
    let settled = wait_for(limit, || {
        shared.open.load(Relaxed) + handles.iter().filter(|h| h.is_finished()).count()
            >= handles.len()
    })
    .await;
    if !settled {
        return Err(format!(
            "only {} of {} subscribers connected within {limit:?}",
            shared.open.load(Relaxed),
            handles.len()
        ));
    }
    Ok(())
}

/// Waits until `expected` new deliveries arrived, or none came for `quiet`, or five minutes
/// passed.
pub(crate) async fn drain(shared: &Shared, expected: u64, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = shared.deliveries.load(Relaxed);
    let mut last_change = Instant::now();
    while Instant::now() < deadline {
        let now = shared.deliveries.load(Relaxed);
        if now >= expected {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deliveries `subscribers` spread round-robin over `channels` must receive: every accepted
/// event of a channel, once per subscriber of that channel.
pub(crate) fn expected_deliveries(
    published: &crate::publisher::Published,
    subscribers: usize,
    channels: usize,
) -> u64 {
    let on_channel =
        |c: usize| (subscribers / channels + usize::from(c < subscribers % channels)) as u64;
    let sent: u64 = published
        .per_channel
        .iter()
        .enumerate()
        .map(|(c, &events)| events * on_channel(c))
        .sum();
    let failed: u64 = published
        .failed_events
        .iter()
        .map(|&(c, _)| on_channel(c))
        .sum();
    sent.saturating_sub(failed)
}

/// Waits until no delivery arrived for `quiet` (bounded by a minute): for runs whose total
/// count cannot tell when every subscriber got its last event.
pub(crate) async fn settle(shared: &Shared, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = shared.deliveries.load(Relaxed);
    let mut last_change = Instant::now();
    while Instant::now() < deadline && last_change.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = shared.deliveries.load(Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
}

/// Tells every subscriber to close and collects what each saw (bounded by a minute).
pub(crate) async fn finish(
    stop: &tokio::sync::watch::Sender<bool>,
    handles: Vec<JoinHandle<Outcome>>,
) -> Vec<Outcome> {
    let _ = stop.send(true);
    let mut outcomes = Vec::with_capacity(handles.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    for handle in handles {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, handle).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(err)) => outcomes.push(Outcome {
                broken: Some(format!("subscriber task failed: {err}")),
                ..Outcome::default()
            }),
            Err(_) => outcomes.push(Outcome {
                broken: Some("subscriber did not stop within a minute".into()),
                ..Outcome::default()
            }),
        }
    }
    outcomes
}

/// Which deliveries a subscriber should have got: the sequence numbers `from..to` of its
/// channel, except events whose publish failed (and that did not arrive either).
pub(crate) struct Expectation {
    pub from: u64,
    pub to: u64,
    pub failed: Vec<u64>,
}

/// Expected sequence ranges per channel for what `published` published.
pub(crate) fn expectations(
    setup: &Setup,
    published: &Published,
    first_seq: u64,
) -> Vec<Expectation> {
    (0..setup.channel_names.len())
        .map(|c| Expectation {
            from: first_seq,
            to: first_seq + published.per_channel.get(c).copied().unwrap_or(0),
            failed: published
                .failed_events
                .iter()
                .filter(|(channel, _)| *channel == c)
                .map(|(_, seq)| *seq)
                .collect(),
        })
        .collect()
}

/// Checks one subscriber's deliveries against what it should have got.
pub(crate) fn check(outcome: &Outcome, expected: &Expectation) -> Counts {
    let mut counts = outcome.tracker.counts(expected.from, expected.to);
    for &seq in &expected.failed {
        if !outcome.tracker.has(seq) {
            counts.expected = counts.expected.saturating_sub(1);
            counts.lost = counts.lost.saturating_sub(1);
        }
    }
    add_stream_faults(outcome, &mut counts);
    counts
}

/// Adds what the stream itself did wrong to `counts`, and marks the subscriber faulty if
/// anything was.
pub(crate) fn add_stream_faults(outcome: &Outcome, counts: &mut Counts) {
    counts.foreign += outcome.foreign;
    counts.gaps += outcome.gaps;
    counts.connect_failed += u64::from(outcome.connect_error.is_some());
    counts.broken_streams += u64::from(outcome.broken.is_some());
    counts.faulty_subscribers = u64::from(!counts.exact());
}

/// Keeps a few distinct error messages of the outcomes for the report.
pub(crate) fn sample_errors(outcomes: &[Outcome], errors: &mut Vec<String>) {
    for outcome in outcomes {
        for (kind, error) in [
            ("connect", &outcome.connect_error),
            ("stream", &outcome.broken),
        ] {
            if let Some(error) = error {
                let line = format!("{kind}: {error}");
                if errors.len() < 8 && !errors.contains(&line) {
                    errors.push(line);
                }
            }
        }
    }
}

/// Latency per subscriber target.
pub(crate) fn per_target(
    setup: &Setup,
    shared: &Shared,
    outcomes: &[Outcome],
) -> Vec<TargetReport> {
    setup
        .subs
        .iter()
        .enumerate()
        .map(|(index, target)| TargetReport {
            url: target.url.clone(),
            subscribers: outcomes.iter().filter(|o| o.target == index).count() as u64,
            latency: crate::latency::Summary::of(&shared.recorder.target(index)),
        })
        .collect()
}
