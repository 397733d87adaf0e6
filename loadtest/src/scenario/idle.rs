//! `idle`: N subscribers over C channels and no events; what each open stream costs the server
//! in resident memory.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Common, Setup};
use crate::report::{IdleReport, Report};
use crate::subscriber::Shared;
use crate::tracker::Counts;

/// Options of `idle`.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct IdleArgs {
    /// Subscribers (N).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Channels they spread over (C).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub channels: usize,
    /// Seconds to hold the connections open before reading memory.
    #[arg(long, default_value_t = 3.0)]
    pub hold: f64,
}

/// Connects, holds, reads the server's RSS, and reports RSS growth per subscriber.
pub async fn run(common: &Common, args: &IdleArgs) -> Result<Report, String> {
    let setup = Setup::new(common, args.channels, args.subscribers, false)?;
    let window = setup.window_start();
    let (shared, stop) = Shared::new(setup.subs.len(), common.connect_concurrency);
    let handles: Vec<_> = (0..args.subscribers)
        .map(|i| super::spawn(setup.spec(i, i % args.channels), &shared))
        .collect();
    super::wait_connected(&shared, &handles, common).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.hold.clamp(0.0, 3600.0))).await;

    let connected = shared.open.load(Relaxed) as u64;
    let mut report = setup.report(
        "idle",
        serde_json::to_value(args).unwrap_or_default(),
        args.subscribers,
    );
    setup.window_end(&window, &mut report);
    let per = |kib: f64| {
        if connected > 0 {
            kib / connected as f64
        } else {
            0.0
        }
    };
    report.idle = Some(IdleReport {
        connected,
        server_kib_per_subscriber: report.server.as_ref().map_or(0.0, |server| {
            per(server.rss_after_kib as f64 - server.rss_before_kib as f64)
        }),
        tool_kib_per_subscriber: per(report.tool.rss_kib as f64),
    });

    let outcomes = super::finish(&stop, handles).await;
    let mut counts = Counts::default();
    for outcome in &outcomes {
        let mut one = outcome.tracker.counts(0, 0);
        super::add_stream_faults(outcome, &mut one);
        counts.add(&one);
    }
    report.counts = counts;
    super::sample_errors(&outcomes, &mut report.errors);
    Ok(report)
}
