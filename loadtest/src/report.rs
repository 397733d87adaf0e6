//! The result of one scenario run: every figure in one serializable struct, printed as a table
//! for people and written as JSON for the comparison report.

use std::fmt::Write as _;
use std::fs;

use serde::{Deserialize, Serialize};

use crate::latency::Summary;
use crate::procstat::Process;
use crate::tracker::Counts;

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `idle`, `fanout`, `replay-storm`, `churn` or `cluster`.
    pub scenario: String,
    /// A name for the server under test (`ssehub`, `nchan`), from `--label`.
    pub label: String,
    /// The scenario's parameters as given.
    pub params: serde_json::Value,
    /// Subscribers asked for, and channels they spread over.
    pub subscribers: u64,
    pub channels: u64,
    /// Delivery checks summed over subscribers (each subscriber checked on its own).
    pub counts: Counts,
    /// One-way latency from the scheduled send time to arrival.
    pub latency: Summary,
    /// Latency per subscriber target (several for `cluster`).
    pub per_target: Vec<TargetReport>,
    pub publish: Option<PublishReport>,
    /// The measurement window: from the first scheduled send to the last delivery, seconds.
    pub window_s: f64,
    /// First-time deliveries in the window.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// Deliveries per second the schedule offered (rate × subscribers per channel).
    pub offered_deliveries_per_s: f64,
    pub server: Option<ServerReport>,
    /// Deliveries per CPU second of all server processes together.
    pub deliveries_per_server_cpu_s: Option<f64>,
    /// Server CPU microseconds per delivery (the inverse, for the chart).
    pub server_cpu_us_per_delivery: Option<f64>,
    pub tool: ToolReport,
    pub idle: Option<IdleReport>,
    pub replay: Option<ReplayReport>,
    pub churn: Option<ChurnReport>,
    /// A few error messages (connect failures, broken streams, refused publishes).
    pub errors: Vec<String>,
    pub machine: Machine,
}

/// Latency seen through one subscriber URL.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetReport {
    pub url: String,
    pub subscribers: u64,
    pub latency: Summary,
}

/// The publisher's side.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishReport {
    pub accepted: u64,
    pub failed: u64,
    /// Events per second asked for (0: as fast as answered).
    pub rate: f64,
    /// How late requests went out against the schedule (the publisher fell behind when large).
    pub send_lag: Summary,
}

/// CPU and memory of the server's processes over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerReport {
    /// CPU seconds of all server processes in the window.
    pub cpu_s: f64,
    /// Average cores busy: `cpu_s / window_s`.
    pub cores: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Each process at the end, with its CPU seconds in the window.
    pub processes: Vec<ProcessReport>,
}

/// One server process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    pub cpu_s: f64,
    pub rss_kib: u64,
}

impl ProcessReport {
    /// A process from a sample, with its CPU in the window.
    pub fn new(process: &Process, cpu_s: f64) -> ProcessReport {
        ProcessReport {
            pid: process.pid,
            comm: process.comm.clone(),
            cpu_s,
            rss_kib: process.rss_kib,
        }
    }
}

/// The load tool's own cost: it runs on the same cores as the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolReport {
    pub cpu_s: f64,
    pub cores: f64,
    pub rss_kib: u64,
    /// Subscriber threads (the publisher has one more of its own).
    pub threads: usize,
}

/// `idle`: memory per subscriber.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleReport {
    /// Open streams when memory was read.
    pub connected: u64,
    /// (server RSS after connecting − before) / connected.
    pub server_kib_per_subscriber: f64,
    /// The tool's RSS / connected (what one tool subscriber costs, at most).
    pub tool_kib_per_subscriber: f64,
}

/// `replay-storm`: how fast every client caught up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Missed events each client resumed.
    pub missed: u64,
    /// Clients that got all their missed events.
    pub completed: u64,
    /// From the storm's start to the last client complete, seconds.
    pub completion_s: f64,
    /// Per-client time from connecting to complete, ms.
    pub client_ms: Summary,
}

/// `churn`: the subscribers that came and went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnReport {
    /// Short-lived subscribers started.
    pub started: u64,
    /// Their deliveries, checked between the first and last event each saw.
    pub counts: Counts,
    /// Time from connect to response head, ms.
    pub connect_ms: Summary,
}

/// The machine the run was on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    /// Reads this machine's description from `/proc`.
    pub fn here() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map_or_else(String::new, |(_, model)| model.trim().to_string()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

fn latency_line(out: &mut String, name: &str, s: &Summary) {
    let _ = writeln!(
        out,
        "{name:<28} p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} ms  ({} samples)",
        s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms, s.count
    );
}

fn counts_line(out: &mut String, name: &str, c: &Counts) {
    let _ = writeln!(
        out,
        "{name:<28} expected {}  received {}  lost {}  duplicated {}  out-of-order {}  \
         unexpected {}  gaps {}  foreign {}",
        c.expected,
        c.received,
        c.lost,
        c.duplicated,
        c.out_of_order,
        c.unexpected,
        c.gaps,
        c.foreign
    );
    let _ = writeln!(
        out,
        "{:<28} faulty subscribers {}  connect failures {}  broken streams {}  => {}",
        "",
        c.faulty_subscribers,
        c.connect_failed,
        c.broken_streams,
        if c.exact() { "EXACT" } else { "NOT EXACT" }
    );
}

impl Report {
    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== {} [{}]: {} subscribers over {} channels ==",
            self.scenario, self.label, self.subscribers, self.channels
        );
        counts_line(&mut out, "deliveries", &self.counts);
        if self.latency.count > 0 {
            latency_line(&mut out, "latency (from schedule)", &self.latency);
        }
        if self.per_target.len() > 1 {
            for target in &self.per_target {
                latency_line(
                    &mut out,
                    &format!("  via {} ({} subs)", target.url, target.subscribers),
                    &target.latency,
                );
            }
        }
        if let Some(publish) = &self.publish {
            let _ = writeln!(
                out,
                "{:<28} accepted {}  failed {}  rate {}/s  send lag p99 {:.3} ms  max {:.3} ms",
                "publisher",
                publish.accepted,
                publish.failed,
                publish.rate,
                publish.send_lag.p99_ms,
                publish.send_lag.max_ms
            );
        }
        if self.deliveries > 0 {
            let _ = writeln!(
                out,
                "{:<28} {} in {:.2} s = {:.0}/s (offered {:.0}/s)",
                "throughput",
                self.deliveries,
                self.window_s,
                self.deliveries_per_s,
                self.offered_deliveries_per_s
            );
        }
        if let Some(server) = &self.server {
            let _ = writeln!(
                out,
                "{:<28} {:.2} CPU s ({:.2} cores)  RSS {} -> {} KiB  ({} processes)",
                "server",
                server.cpu_s,
                server.cores,
                server.rss_before_kib,
                server.rss_after_kib,
                server.processes.len()
            );
            if server.processes.len() > 1 {
                for p in &server.processes {
                    let _ = writeln!(
                        out,
                        "{:<28} {:.2} CPU s  RSS {} KiB",
                        format!("  {} {}", p.comm, p.pid),
                        p.cpu_s,
                        p.rss_kib
                    );
                }
            }
        }
        if let (Some(per_cpu), Some(us)) = (
            self.deliveries_per_server_cpu_s,
            self.server_cpu_us_per_delivery,
        ) {
            let _ = writeln!(
                out,
                "{:<28} {per_cpu:.0} per server CPU second ({us:.2} CPU µs each)",
                "deliveries"
            );
        }
        if let Some(idle) = &self.idle {
            let _ = writeln!(
                out,
                "{:<28} server {:.2} KiB per subscriber, tool {:.2} KiB per subscriber ({} open)",
                "idle memory",
                idle.server_kib_per_subscriber,
                idle.tool_kib_per_subscriber,
                idle.connected
            );
        }
        if let Some(replay) = &self.replay {
            let _ = writeln!(
                out,
                "{:<28} {} of {} clients got their {} missed events; all done in {:.3} s",
                "replay", replay.completed, self.subscribers, replay.missed, replay.completion_s
            );
            latency_line(&mut out, "  per client catch-up", &replay.client_ms);
        }
        if let Some(churn) = &self.churn {
            let _ = writeln!(
                out,
                "{:<28} {} short-lived subscribers",
                "churn", churn.started
            );
            counts_line(&mut out, "  their deliveries", &churn.counts);
            latency_line(&mut out, "  connect (to response head)", &churn.connect_ms);
        }
        let _ = writeln!(
            out,
            "{:<28} {:.2} CPU s ({:.2} cores), RSS {} KiB, {} subscriber thread(s) + 1 publisher \
             thread, on the same {} cores as the server",
            "load tool",
            self.tool.cpu_s,
            self.tool.cores,
            self.tool.rss_kib,
            self.tool.threads,
            self.machine.nproc
        );
        for error in &self.errors {
            let _ = writeln!(out, "{:<28} {error}", "error");
        }
        out
    }

    /// Writes the report as JSON to `path`.
    pub fn write_json(&self, path: &std::path::Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|err| err.to_string())?;
        fs::write(path, text).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// Reads a report written by [`Report::write_json`].
    pub fn read_json(path: &std::path::Path) -> Result<Report, String> {
        let text = fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
        serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))
    }
}
