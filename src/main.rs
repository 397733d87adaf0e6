//! The `ssehub` binary: reads settings, sets up logging, and serves until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use ssehub::auth::Permissions;
use ssehub::config::{Cli, Command, Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc: less CPU per delivery and less memory per idle subscriber than glibc's malloc
/// here (measured with `loadtest/`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token {
        key,
        publish,
        subscribe,
        ttl,
    }) = &cli.command
    {
        return mint_token(key, publish, subscribe, ttl);
    }
    let config = match cli.settings.into_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ssehub: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = ssehub::auth::Auth::from_config(&config) {
        eprintln!("ssehub: invalid token key: {err}");
        return ExitCode::from(2);
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        if let Err(err) = ssehub::tls::acceptor(cert, key) {
            eprintln!("ssehub: invalid TLS settings: {err}");
            return ExitCode::from(2);
        }
    }
    if let Some(Command::CheckConfig) = cli.command {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    let runtime = match runtime(config.workers) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ssehub: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command, config))
}

/// The multi-threaded runtime with `workers` threads (0: one per core), named so that `top -H`
/// shows them.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.thread_name("ssehub-worker");
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}

/// `ssehub health`, or the hub itself until SIGTERM or SIGINT.
async fn run(command: Option<Command>, config: Config) -> ExitCode {
    if let Some(Command::Health) = command {
        return match ssehub::health::probe(&config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("ssehub health: {err}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&config);
    raise_open_file_limit(config.max_connections);
    let listener = match listen(config.listen) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(listen = %config.listen, error = %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %listener.local_addr().map_or(config.listen, |a| a),
        tls = config.tls_cert.is_some(),
        broker = if config.redis_url.is_some() { "redis" } else { "memory" },
        "ssehub listening"
    );
    match ssehub::server::run(config, listener, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("ssehub stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, "ssehub failed");
            ExitCode::FAILURE
        }
    }
}

/// `ssehub token`: prints a token for the given channel patterns.
fn mint_token(key: &str, publish: &[String], subscribe: &[String], ttl: &str) -> ExitCode {
    let lifetime = match humantime::parse_duration(ttl) {
        Ok(lifetime) => lifetime,
        Err(err) => {
            eprintln!("ssehub token: invalid --ttl {ttl:?}: {err}");
            return ExitCode::from(2);
        }
    };
    let permissions = Permissions {
        publish: publish.to_vec(),
        subscribe: subscribe.to_vec(),
    };
    match ssehub::auth::mint(key, permissions, lifetime) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ssehub token: {err}");
            ExitCode::from(2)
        }
    }
}

/// Descriptors the hub needs besides its connections (listener, Redis, logs), roughly.
const SPARE_FILES: u64 = 64;

/// Raises the soft open-file limit to the hard one: every connection is a descriptor, and many
/// runtimes start processes with a soft limit of 1024. Warns when it stays below what
/// `max-connections` needs, since connections beyond it fail at accept.
fn raise_open_file_limit(max_connections: usize) {
    let needed = max_connections as u64 + SPARE_FILES;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            max_connections,
            "open-file limit is below max-connections; raise it (ulimit -n, LimitNOFILE)"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
}

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`); the
/// default 128 drops SYNs when thousands of clients reconnect at once.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}
