//! `churn`: N steady subscribers and events flowing, while short-lived subscribers connect and
//! disconnect at a fixed rate; the steady ones must still get everything, and each short-lived
//! one everything between the first and last event it saw.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Common, Setup};
use crate::latency::{new_histogram, Summary};
use crate::report::{ChurnReport, PublishReport, Report};
use crate::subscriber::Shared;
use crate::tracker::Counts;

/// Silence after which the last events are taken to have arrived everywhere.
const SETTLE: Duration = Duration::from_millis(300);

/// Options of `churn`.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct ChurnArgs {
    /// Steady subscribers (N).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Channels (C).
    #[arg(short = 'c', long, default_value_t = 10)]
    pub channels: usize,
    /// Events per second over all channels.
    #[arg(short = 'r', long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Short-lived subscribers connecting per second (as many disconnect).
    #[arg(long, default_value_t = 100.0)]
    pub churn: f64,
    /// How long each short-lived subscriber stays, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub lifetime_ms: u64,
}

/// Runs churn.
pub async fn run(common: &Common, args: &ChurnArgs) -> Result<Report, String> {
    if args.rate <= 0.0 || args.churn <= 0.0 || args.duration <= 0.0 {
        return Err("--rate, --churn and --duration must be positive".into());
    }
    let duration = args.duration.min(3600.0);
    let churners_at_once = (args.churn * args.lifetime_ms as f64 / 1000.0).ceil() as usize + 16;
    let setup = Setup::new(
        common,
        args.channels,
        args.subscribers + churners_at_once,
        true,
    )?;
    let (shared, stop) = Shared::new(setup.subs.len(), common.connect_concurrency);
    let handles: Vec<_> = (0..args.subscribers)
        .map(|i| super::spawn(setup.spec(i, i % args.channels), &shared))
        .collect();
    super::wait_connected(&shared, &handles, common).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let window = setup.window_start();
    let events = (args.rate * duration).ceil() as u64;
    let publishing = crate::publisher::start(setup.plan(args.rate, events, 0));
    let started = Instant::now();
    let total_churners = (args.churn * duration).floor() as usize;
    let mut churners = Vec::with_capacity(total_churners);
    for k in 0..total_churners {
        tokio::time::sleep_until(started + Duration::from_secs_f64(k as f64 / args.churn)).await;
        let mut spec = setup.spec(args.subscribers + k, k % args.channels);
        spec.lifetime = Some(Duration::from_millis(args.lifetime_ms));
        spec.attempts = 1;
        churners.push(super::spawn(spec, &shared));
    }
    let published = publishing
        .await
        .map_err(|_| "the publisher thread died".to_string())?;
    let steady_expected = super::expected_deliveries(&published, args.subscribers, args.channels);
    // Short-lived subscribers' deliveries count too, so the total reaches the steady ones'
    // share before the last events reached every steady subscriber: wait for the share, then
    // until deliveries stop.
    let quiet = Duration::from_secs_f64(common.drain_timeout.max(0.1));
    super::drain(&shared, steady_expected, quiet).await;
    super::settle(&shared, SETTLE).await;

    let mut report = setup.report(
        "churn",
        serde_json::to_value(args).unwrap_or_default(),
        args.subscribers,
    );
    report.deliveries = shared.deliveries.load(Relaxed);
    report.window_s = shared
        .last_delivery_us
        .load(Relaxed)
        .saturating_sub(published.start_us) as f64
        / 1e6;
    if report.window_s > 0.0 {
        report.deliveries_per_s = report.deliveries as f64 / report.window_s;
    }
    report.offered_deliveries_per_s = args.rate * args.subscribers as f64 / args.channels as f64;
    setup.window_end(&window, &mut report);

    let churn_outcomes = super::finish(&stop, churners).await;
    let outcomes = super::finish(&stop, handles).await;
    let expectations = super::expectations(&setup, &published, 0);
    let mut counts = Counts::default();
    for (i, outcome) in outcomes.iter().enumerate() {
        counts.add(&super::check(outcome, &expectations[i % args.channels]));
    }
    let mut churn_counts = Counts::default();
    let mut connect_us = new_histogram();
    for outcome in &churn_outcomes {
        let mut one = outcome.tracker.counts_between_first_and_last();
        super::add_stream_faults(outcome, &mut one);
        churn_counts.add(&one);
        if let Some(us) = outcome.connect_us {
            connect_us.saturating_record(us.max(1));
        }
    }
    report.counts = counts;
    report.latency = Summary::of(&shared.recorder.total());
    report.churn = Some(ChurnReport {
        started: churn_outcomes.len() as u64,
        counts: churn_counts,
        connect_ms: Summary::of(&connect_us),
    });
    report.publish = Some(PublishReport {
        accepted: published.accepted,
        failed: published.failed,
        rate: args.rate,
        send_lag: published.send_lag.clone(),
    });
    report.errors = published.errors.clone();
    super::sample_errors(&outcomes, &mut report.errors);
    super::sample_errors(&churn_outcomes, &mut report.errors);
    Ok(report)
}
