//! The `ssehub-loadtest` command: one subcommand per scenario, plus the helpers the comparison
//! script needs (a free port, the Markdown and SVG report).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ssehub_loadtest::scenario::churn::ChurnArgs;
use ssehub_loadtest::scenario::fanout::FanoutArgs;
use ssehub_loadtest::scenario::idle::IdleArgs;
use ssehub_loadtest::scenario::replay::ReplayArgs;
use ssehub_loadtest::scenario::Common;
use ssehub_loadtest::{compare, Scenario};

/// Load-tests an SSE hub over loopback: real SSE subscribers over TCP, a publisher on a fixed
/// schedule, exact per-subscriber delivery checks, latency from the scheduled send time, and
/// the server's CPU and memory from /proc.
#[derive(Parser)]
#[command(name = "ssehub-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N subscribers over C channels, no events: server memory per subscriber.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: IdleArgs,
    },
    /// N subscribers over C channels, R events/s, M events: delivery checks, latency, CPU.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: FanoutArgs,
    },
    /// N clients reconnect at once with a Last-Event-ID K events behind: exactness, completion.
    ReplayStorm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ReplayArgs,
    },
    /// Subscribers connect and disconnect at a fixed rate while events flow.
    Churn {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ChurnArgs,
    },
    /// Fan-out spread over several nodes (repeat --sub-url and --pub-url), per-node figures.
    Cluster {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: FanoutArgs,
    },
    /// Runs the write-only reference server (no history, no limits) on a loopback address
    /// until killed: the floor a hub's CPU and latency are read against.
    FloorServer {
        /// Loopback address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Answer publishes at once and write each subscriber everything it has not had in one
        /// write, in rounds: the floor of a hub that coalesces.
        #[arg(long)]
        coalesce: bool,
    },
    /// Prints a free TCP port on 127.0.0.1 (for scripts).
    FreePort,
    /// Writes the comparison Markdown and SVG from JSON reports (used by compare.sh).
    Report(compare::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, scenario) = match cli.command {
        Command::Idle { common, args } => (common, Scenario::Idle(args)),
        Command::Fanout { common, args } => (common, Scenario::Fanout(args)),
        Command::ReplayStorm { common, args } => (common, Scenario::ReplayStorm(args)),
        Command::Churn { common, args } => (common, Scenario::Churn(args)),
        Command::Cluster { common, args } => {
            if common.sub_urls.len() < 2 && common.pub_urls.len() < 2 {
                eprintln!("note: cluster with one --sub-url and one --pub-url is plain fan-out");
            }
            (common, Scenario::Cluster(args))
        }
        Command::FreePort => {
            return match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(addr) => {
                    println!("{}", addr.port());
                    ExitCode::SUCCESS
                }
                Err(err) => fail(&format!("no free port: {err}")),
            };
        }
        Command::FloorServer { listen, coalesce } => {
            if !listen.ip().is_loopback() {
                return fail(&format!(
                    "{listen}: the floor server listens on loopback only"
                ));
            }
            let served = std::net::TcpListener::bind(listen)
                .and_then(|listener| ssehub_loadtest::floor::serve(listener, coalesce));
            return match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&format!("floor server on {listen}: {err}")),
            };
        }
        Command::Report(args) => {
            return match compare::write(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err),
            };
        }
    };
    match ssehub_loadtest::run(&common, &scenario) {
        Ok(report) => {
            print!("{}", report.table());
            if let Some(path) = &common.json {
                println!("report written to {}", path.display());
            }
            if report.counts.exact() {
                ExitCode::SUCCESS
            } else {
                // Measured, but not exact: say so in the exit code too.
                ExitCode::from(3)
            }
        }
        Err(err) => fail(&err),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("ssehub-loadtest: {message}");
    ExitCode::from(2)
}
