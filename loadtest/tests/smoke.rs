//! Smoke run of the load tool against an in-process ssehub, so the instrument never rots: a tiny
//! fan-out and a tiny replay storm must be exact and produce latency figures. No timing is
//! asserted: this is a correctness check of the tool and the hub, not a benchmark.

use std::net::SocketAddr;
use std::time::Duration;

use ssehub_loadtest::scenario::fanout::FanoutArgs;
use ssehub_loadtest::scenario::replay::ReplayArgs;
use ssehub_loadtest::scenario::Common;
use ssehub_loadtest::{Report, Scenario};

/// Starts ssehub on a free loopback port on a runtime of its own thread; stops when the
/// returned sender is dropped.
fn start_hub() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("hub runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let config = ssehub::Config {
                listen: addr,
                ..ssehub::Config::default()
            };
            ready_tx.send(addr).expect("report the address");
            let shutdown = async move {
                let _ = stopped.await;
            };
            ssehub::server::run(config, listener, shutdown)
                .await
                .expect("hub runs");
        });
    });
    let addr = ready
        .recv_timeout(Duration::from_secs(10))
        .expect("hub started");
    (addr, stop)
}

fn common(addr: SocketAddr) -> Common {
    let mut common = Common::new(
        &format!("http://{addr}/events/{{channel}}"),
        &format!("http://{addr}/publish/{{channel}}"),
    );
    common.label = "ssehub".into();
    // The hub runs in this process, so "server" figures here include the tool: they only have to
    // exist, their size means nothing.
    common.server_pid = vec![std::process::id()];
    common.drain_timeout = 3.0;
    common
}

fn assert_exact(report: &Report) {
    let counts = &report.counts;
    assert!(counts.expected > 0, "{}", report.table());
    assert_eq!(counts.received, counts.expected, "{}", report.table());
    assert_eq!(counts.lost, 0, "{}", report.table());
    assert_eq!(counts.duplicated, 0, "{}", report.table());
    assert_eq!(counts.out_of_order, 0, "{}", report.table());
    assert!(counts.exact(), "{}", report.table());
}

#[test]
fn fanout_and_replay_storm_against_ssehub() {
    let (addr, _stop) = start_hub();

    let fanout = Scenario::Fanout(FanoutArgs {
        subscribers: 20,
        channels: 2,
        rate: 200.0,
        events: 100,
    });
    let report = ssehub_loadtest::run(&common(addr), &fanout).expect("fanout runs");
    assert_exact(&report);
    assert_eq!(report.counts.expected, 20 * 50);
    assert_eq!(report.latency.count, 1000);
    assert!(report.latency.p50_ms > 0.0 && report.latency.max_ms >= report.latency.p99_ms);
    assert!(report.server.is_some(), "server figures from /proc");
    assert!(report.deliveries_per_server_cpu_s.is_some() || report.deliveries > 0);
    assert!(report.table().contains("EXACT"));

    let storm = Scenario::ReplayStorm(ReplayArgs {
        clients: 20,
        channels: 2,
        missed: 10,
        publish_rate: 0.0,
        storm_timeout: 20.0,
    });
    let report = ssehub_loadtest::run(&common(addr), &storm).expect("replay storm runs");
    assert_exact(&report);
    assert_eq!(report.counts.expected, 20 * 10);
    let replay = report.replay.as_ref().expect("replay figures");
    assert_eq!(replay.completed, 20);
    assert_eq!(replay.client_ms.count, 20);
}

#[test]
fn fanout_against_the_write_only_floor_server() {
    fanout_against_floor(false, 20, 200.0);
}

/// Faster than one write per event keeps up with, so subscribers fall behind and get several
/// events per write (2 to 6 when counted).
#[test]
fn fanout_against_the_coalescing_floor_server() {
    fanout_against_floor(true, 400, 5000.0);
}

fn fanout_against_floor(coalesce: bool, subscribers: usize, rate: f64) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    // Serves until the test process ends.
    std::thread::spawn(move || ssehub_loadtest::floor::serve(listener, coalesce));
    let mut common = common(addr);
    common.sub_urls = vec![format!("http://{addr}/sub/{{channel}}")];
    common.pub_urls = vec![format!("http://{addr}/pub/{{channel}}")];
    common.label = "floor".into();
    let fanout = Scenario::Fanout(FanoutArgs {
        subscribers,
        channels: 2,
        rate,
        events: 100,
    });
    let report = ssehub_loadtest::run(&common, &fanout).expect("fanout runs");
    assert_exact(&report);
    assert_eq!(report.counts.expected, subscribers as u64 * 50);
    assert_eq!(report.latency.count, subscribers as u64 * 50);
}
