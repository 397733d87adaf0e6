//! `fanout` (and `cluster`): N subscribers over C channels, R events per second in total, M
//! events; every subscriber must get every event of its channel, in order, once.
//! `cluster` is the same run spread over several subscriber and publisher URLs (nodes).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Common, Setup};
use crate::latency::Summary;
use crate::report::{PublishReport, Report};
use crate::subscriber::Shared;
use crate::tracker::Counts;

/// Options of `fanout` and `cluster`.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct FanoutArgs {
    /// Subscribers (N).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Channels they spread over (C); subscriber i reads channel i % C.
    #[arg(short = 'c', long, default_value_t = 1)]
    pub channels: usize,
    /// Events per second over all channels (R).
    #[arg(short = 'r', long, default_value_t = 20.0)]
    pub rate: f64,
    /// Events in total (M); event i goes to channel i % C.
    #[arg(short = 'm', long, default_value_t = 200)]
    pub events: u64,
}

/// Runs fan-out; `scenario` names it in the report (`fanout` or `cluster`).
pub async fn run(common: &Common, args: &FanoutArgs, scenario: &str) -> Result<Report, String> {
    if args.rate <= 0.0 || !args.rate.is_finite() {
        return Err("--rate must be a positive number of events per second".into());
    }
    let setup = Setup::new(common, args.channels, args.subscribers, true)?;
    let (shared, stop) = Shared::new(setup.subs.len(), common.connect_concurrency);
    let handles: Vec<_> = (0..args.subscribers)
        .map(|i| super::spawn(setup.spec(i, i % args.channels), &shared))
        .collect();
    super::wait_connected(&shared, &handles, common).await?;
    // Give the server a moment to finish registering the last subscribers.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let window = setup.window_start();
    let published = crate::publisher::start(setup.plan(args.rate, args.events, 0))
        .await
        .map_err(|_| "the publisher thread died".to_string())?;
    let expected_total = super::expected_deliveries(&published, args.subscribers, args.channels);
    super::drain(
        &shared,
        expected_total,
        Duration::from_secs_f64(common.drain_timeout.max(0.1)),
    )
    .await;

    let mut report = setup.report(
        scenario,
        serde_json::to_value(args).unwrap_or_default(),
        args.subscribers,
    );
    report.deliveries = shared.deliveries.load(std::sync::atomic::Ordering::Relaxed);
    let last = shared
        .last_delivery_us
        .load(std::sync::atomic::Ordering::Relaxed);
    report.window_s = last.saturating_sub(published.start_us) as f64 / 1e6;
    if report.window_s > 0.0 {
        report.deliveries_per_s = report.deliveries as f64 / report.window_s;
    }
    report.offered_deliveries_per_s = args.rate * args.subscribers as f64 / args.channels as f64;
    setup.window_end(&window, &mut report);

    let outcomes = super::finish(&stop, handles).await;
    let expectations = super::expectations(&setup, &published, 0);
    let mut counts = Counts::default();
    for (i, outcome) in outcomes.iter().enumerate() {
        let counts_of_one = super::check(outcome, &expectations[i % args.channels]);
        counts.add(&counts_of_one);
    }
    report.counts = counts;
    report.latency = Summary::of(&shared.recorder.total());
    report.per_target = super::per_target(&setup, &shared, &outcomes);
    report.publish = Some(PublishReport {
        accepted: published.accepted,
        failed: published.failed,
        rate: args.rate,
        send_lag: published.send_lag.clone(),
    });
    report.errors = published.errors.clone();
    super::sample_errors(&outcomes, &mut report.errors);
    Ok(report)
}
