//! ssehub-loadtest: a load generator and measuring instrument for SSE hubs (ssehub, Nchan, any
//! server reachable through URL templates), used as a command and as a library by the smoke test.

pub mod compare;
pub mod floor;
pub mod http;
pub mod latency;
pub mod payload;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod scenario;
pub mod sse;
pub mod subscriber;
pub mod target;
pub mod tracker;

use scenario::churn::ChurnArgs;
use scenario::fanout::FanoutArgs;
use scenario::idle::IdleArgs;
use scenario::replay::ReplayArgs;
use scenario::Common;

pub use report::Report;

/// A scenario with its own options, as the command line names them.
#[derive(Debug, Clone)]
pub enum Scenario {
    Idle(IdleArgs),
    Fanout(FanoutArgs),
    ReplayStorm(ReplayArgs),
    Churn(ChurnArgs),
    Cluster(FanoutArgs),
}

/// Runs `scenario` against the servers `common` names, on a runtime of its own (call it from a
/// plain thread), and writes the JSON report when `common.json` is set.
pub fn run(common: &Common, scenario: &Scenario) -> Result<Report, String> {
    let report = scenario::block_on(common.threads, async {
        match scenario {
            Scenario::Idle(args) => scenario::idle::run(common, args).await,
            Scenario::Fanout(args) => scenario::fanout::run(common, args, "fanout").await,
            Scenario::Cluster(args) => scenario::fanout::run(common, args, "cluster").await,
            Scenario::ReplayStorm(args) => scenario::replay::run(common, args).await,
            Scenario::Churn(args) => scenario::churn::run(common, args).await,
        }
    })?;
    if let Some(path) = &common.json {
        report.write_json(path)?;
    }
    Ok(report)
}
