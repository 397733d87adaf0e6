//! The accept loop: connection cap, HTTP/1.1 and h2c on one port, cancellable connections, and
//! graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, MemoryBroker, RedisBroker};
use crate::config::Config;
use crate::connection::Cut;
use crate::http::{self, cors::Cors, App, ConnectionHandle};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// What stops the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
}

/// Answer for a connection over `max-connections`, written without parsing its request.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 45\r\n\r\n\
{\"error\":\"too many connections, retry later\"}";

/// Serves the hub on `listener` until `shutdown` resolves, then drains: streams get a short
/// randomized `retry:` and end, and connections get `shutdown-timeout` to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new(config.redis_url.is_some()));
    let stop_background = CancellationToken::new();
    let hub = match &config.redis_url {
        None => Hub::new(&config, Broker::Memory(MemoryBroker), metrics.clone()),
        Some(url) => {
            let (broker, feed) = RedisBroker::new(&config, url, metrics.clone())?;
            let hub = Hub::new(&config, Broker::Redis(Box::new(broker)), metrics.clone());
            tokio::spawn(feed.run(hub.clone(), stop_background.clone()));
            hub
        }
    };
    let app = Arc::new(App {
        hub: hub.clone(),
        metrics: metrics.clone(),
        cors: Cors::new(&config.cors_origins),
        config: config.clone(),
    });
    let housekeeping = tokio::spawn(hub.clone().housekeeping(stop_background.clone()));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if metrics.connections.get() >= config.max_connections as i64 {
            metrics.connections_rejected.inc();
            tokio::spawn(refuse(stream));
            continue;
        }
        let _ = stream.set_nodelay(true);
        let connection = Cut::new();
        let app = app.clone();
        let handle = ConnectionHandle(connection.clone());
        let served = Arc::new(AtomicBool::new(false));
        let first_request = served.clone();
        let service = service_fn(move |mut request| {
            first_request.store(true, Relaxed);
            request.extensions_mut().insert(handle.clone());
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(http::handle(app, request).await) }
        });
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        let open = OpenConnection::new(&metrics);
        let header_read_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            // hyper times out headers only once it knows the protocol; this also covers a
            // client that sends nothing (or half an HTTP/2 preface).
            let silent = async {
                tokio::time::sleep(header_read_timeout).await;
                if served.load(Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                result = conn => if let Err(err) = result {
                    tracing::debug!(error = %err, "connection closed");
                },
                _ = connection.wait() => tracing::debug!("connection cut"),
                _ = silent => tracing::debug!("no request within header-read-timeout"),
            }
            drop(open);
        });
    }

    tracing::info!("shutting down: ending streams and draining connections");
    drop(listener);
    hub.shut_down();
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?config.shutdown_timeout,
            "connections still open after the drain deadline"
        );
    }
    stop_background.cancel();
    let _ = housekeeping.await;
    Ok(())
}

/// Counts an open connection in the gauge for as long as it lives.
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(metrics: &Metrics) -> OpenConnection {
        metrics.connections.inc();
        OpenConnection(metrics.connections.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn refuse(mut stream: TcpStream) {
    let write = async {
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await
    };
    if let Err(err) = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(error = %err, "refusing an over-capacity connection");
    }
}
