//! `replay-storm`: N clients reconnect at once, each with a `Last-Event-ID` that leaves it K
//! events behind; every client must get exactly those K events, in order; the figure is how
//! long until the last one has them.
//!
//! The resume point is learnt as a browser learns it: one probe subscriber per channel receives
//! an anchor event and keeps its id. Then K events per channel are published with nobody
//! listening, and the storm reconnects from the anchor id.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Common, Setup};
use crate::latency::{new_histogram, Summary};
use crate::report::{PublishReport, ReplayReport, Report};
use crate::subscriber::Shared;
use crate::tracker::Counts;

/// Options of `replay-storm`.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct ReplayArgs {
    /// Clients that reconnect at once (N).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: usize,
    /// Channels they spread over (C).
    #[arg(short = 'c', long, default_value_t = 10)]
    pub channels: usize,
    /// Events each client missed (K).
    #[arg(short = 'k', long, default_value_t = 100)]
    pub missed: u64,
    /// Events per second while publishing the missed events (0: as fast as answered).
    #[arg(long, default_value_t = 0.0)]
    pub publish_rate: f64,
    /// Seconds the storm may take before the run gives up on stragglers.
    #[arg(long, default_value_t = 120.0)]
    pub storm_timeout: f64,
}

/// Runs the storm.
pub async fn run(common: &Common, args: &ReplayArgs) -> Result<Report, String> {
    if args.missed == 0 {
        return Err("--missed must be at least 1".into());
    }
    let setup = Setup::new(common, args.channels, args.clients + args.channels, true)?;
    let channels = args.channels;

    // 1. One probe per channel learns the id of an anchor event (seq 0).
    let (probes_shared, probes_stop) = Shared::new(setup.subs.len(), common.connect_concurrency);
    let probes: Vec<_> = (0..channels)
        .map(|c| {
            let mut spec = setup.spec(c, c);
            spec.complete_at = Some(1);
            super::spawn(spec, &probes_shared)
        })
        .collect();
    super::wait_connected(&probes_shared, &probes, common).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let anchors = crate::publisher::start(setup.plan(0.0, channels as u64, 0))
        .await
        .map_err(|_| "the publisher thread died".to_string())?;
    if anchors.failed > 0 {
        return Err(format!(
            "publishing the anchor events failed: {:?}",
            anchors.errors
        ));
    }
    super::wait_for(Duration::from_secs(30), || {
        probes_shared.completed.load(Relaxed) >= channels
    })
    .await;
    let probe_outcomes = super::finish(&probes_stop, probes).await;
    let mut anchor_ids = Vec::with_capacity(channels);
    for (c, outcome) in probe_outcomes.iter().enumerate() {
        if outcome.complete_us.is_none() || outcome.last_id.is_empty() {
            return Err(format!(
                "probe of channel {c} got no anchor event with an id ({:?} {:?})",
                outcome.connect_error, outcome.broken
            ));
        }
        anchor_ids.push(Arc::<str>::from(
            String::from_utf8_lossy(&outcome.last_id).as_ref(),
        ));
    }

    // 2. K events per channel while nobody listens.
    let missed = crate::publisher::start(setup.plan(
        args.publish_rate.max(0.0),
        args.missed * channels as u64,
        1,
    ))
    .await
    .map_err(|_| "the publisher thread died".to_string())?;

    // 3. The storm: every client at once, resuming from its channel's anchor.
    let (shared, stop) = Shared::new(setup.subs.len(), common.connect_concurrency);
    // Replayed events are old: their latency from schedule means nothing.
    shared.timing.store(false, Relaxed);
    let window = setup.window_start();
    let expected_per_client = args.missed - missed_failed_per_channel(&missed, channels);
    let handles: Vec<_> = (0..args.clients)
        .map(|i| {
            let mut spec = setup.spec(i, i % channels);
            spec.last_event_id = Some(anchor_ids[i % channels].clone());
            spec.complete_at = Some(expected_per_client);
            super::spawn(spec, &shared)
        })
        .collect();
    let limit = Duration::from_secs_f64(args.storm_timeout.clamp(1.0, 3600.0));
    super::wait_for(limit, || {
        shared.completed.load(Relaxed) + handles.iter().filter(|h| h.is_finished()).count()
            >= args.clients
    })
    .await;
    // Late duplicates or extra events would arrive right after: give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let storm_s = window.started.elapsed().as_secs_f64();

    let mut report = setup.report(
        "replay-storm",
        serde_json::to_value(args).unwrap_or_default(),
        args.clients,
    );
    report.deliveries = shared.deliveries.load(Relaxed);
    report.window_s = storm_s;
    setup.window_end(&window, &mut report);

    let outcomes = super::finish(&stop, handles).await;
    let expectations = super::expectations(&setup, &missed, 1);
    let mut counts = Counts::default();
    let mut client_us = new_histogram();
    let mut completion_us = 0;
    let mut completed = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        counts.add(&super::check(outcome, &expectations[i % channels]));
        if let Some(us) = outcome.complete_us {
            completed += 1;
            completion_us = completion_us.max(us);
            client_us.saturating_record(us.max(1));
        }
    }
    report.counts = counts;
    if completion_us > 0 {
        report.deliveries_per_s = report.deliveries as f64 * 1e6 / completion_us as f64;
    }
    report.replay = Some(ReplayReport {
        missed: args.missed,
        completed,
        completion_s: completion_us as f64 / 1e6,
        client_ms: Summary::of(&client_us),
    });
    report.publish = Some(PublishReport {
        accepted: missed.accepted,
        failed: missed.failed,
        rate: args.publish_rate,
        send_lag: Summary::default(),
    });
    report.errors = missed.errors.clone();
    super::sample_errors(&outcomes, &mut report.errors);
    Ok(report)
}

/// Most failed publishes on any one channel (a client then completes with fewer events).
fn missed_failed_per_channel(published: &crate::publisher::Published, channels: usize) -> u64 {
    (0..channels)
        .map(|c| {
            published
                .failed_events
                .iter()
                .filter(|(ch, _)| *ch == c)
                .count() as u64
        })
        .max()
        .unwrap_or(0)
}
