//! The accept loop: connection cap, HTTP/1.1 and h2c on one port (event streams over HTTP/1.1
//! served directly, the rest by hyper) or HTTPS with ALPN, cancellable connections, and
//! graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::broker::{Broker, MemoryBroker, RedisBroker};
use crate::config::Config;
use crate::connection::Cut;
use crate::http::{self, cors::Cors, App, ConnectionHandle};
use crate::hub::Hub;
use crate::limits::{ConnectionsPerIp, PublishRate};
use crate::metrics::Metrics;
use crate::rewind::Rewind;
use crate::stream_connection::{self, EventStream};

/// What stops the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("invalid token key: {0}")]
    Key(#[from] crate::auth::KeyError),
    #[error("invalid TLS settings: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Answer for a connection over `max-connections`, written without parsing its request.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 45\r\n\r\n\
{\"error\":\"too many connections, retry later\"}";

/// Largest request head hyper buffers (larger ones get 431); bodies stream through it.
const MAX_REQUEST_HEAD: usize = 32 << 10;

/// Answer for a connection over `max-connections-per-ip`.
const TOO_MANY_FROM_ADDRESS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 50\r\n\r\n\
{\"error\":\"too many connections from this address\"}";

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
    let auth = Auth::from_config(&config)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    if auth.is_open() {
        tracing::warn!(
            listen = %config.listen,
            "no JWT key configured: anyone who reaches this address may publish and subscribe"
        );
    }
    let app = Arc::new(App {
        hub: hub.clone(),
        auth,
        publish_rate: (config.publish_rate > 0)
            .then(|| PublishRate::new(config.publish_rate, config.publish_burst)),
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
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    let per_ip = (config.max_connections_per_ip > 0)
        .then(|| ConnectionsPerIp::new(config.max_connections_per_ip));
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
            tokio::spawn(refuse(stream, OVER_CAPACITY));
            continue;
        }
        let slot = match &per_ip {
            None => None,
            Some(per_ip) => match per_ip.admit(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    metrics.connections_rejected.inc();
                    tokio::spawn(refuse(stream, TOO_MANY_FROM_ADDRESS));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let open = OpenConnection::new(&metrics);
        let handle = ConnectionHandle {
            cut: Cut::new(),
            peer: peer.ip(),
        };
        let serving = Serving {
            app: app.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            handle,
        };
        let connection = serve_connection(serving, stream, tls.clone());
        let tracker = connections.clone();
        connections.spawn(async move {
            match connection.await {
                // The stream goes on in a task of its own, sized for its state alone: the
                // memory of an idle subscriber, and what each delivery touches.
                Some(events) => {
                    tracker.spawn(async move {
                        events.run().await;
                        drop((open, slot));
                    });
                }
                None => drop((open, slot)),
            }
        });
    }

    tracing::info!("shutting down: ending streams and draining connections");
    drop(listener);
    hub.shut_down();
    connections.close();
    let drained = async {
        graceful.shutdown().await;
        connections.wait().await;
    };
    if tokio::time::timeout(config.shutdown_timeout, drained)
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

/// What serving one connection needs besides its socket.
struct Serving {
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    handle: ConnectionHandle,
}

/// Serves one connection with hyper (HTTP/1.1 or h2c; everything over TLS) until it ends or
/// the hub cuts it, or answers an HTTP/1.1 event-stream request and returns the stream to run.
async fn serve_connection(
    serving: Serving,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
) -> Option<EventStream> {
    if let Some(tls) = tls {
        // Boxed: inline, its state would enlarge every plain connection's task as well.
        Box::pin(serve_tls(serving, tls, stream)).await;
        return None;
    }
    // Boxed: inline, the route's state (hyper's connection among it) enlarges every connection
    // task, and an idle subscriber then costs 7.0 KiB instead of 1.9 (7.9 with glibc's malloc;
    // loadtest idle, 15 000 over 100 channels): the freed large task is not reused in full.
    Box::pin(route(serving, stream)).await
}

/// Serves an HTTPS connection with hyper (HTTP/2 or HTTP/1.1, as ALPN chose) once its TLS
/// handshake finishes within `header-read-timeout`.
async fn serve_tls(serving: Serving, tls: TlsAcceptor, stream: TcpStream) {
    let timeout = serving.app.config.header_read_timeout;
    match tokio::time::timeout(timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => serve_with_hyper(serving, stream, bytes::Bytes::new()).await,
        Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
        Err(_) => tracing::debug!("no TLS handshake within header-read-timeout"),
    }
}

/// Reads the first request head and hands the connection to the direct event-stream path
/// (returning the stream to run) or to hyper (serving it to the end).
async fn route(serving: Serving, mut stream: TcpStream) -> Option<EventStream> {
    let timeout = serving.app.config.header_read_timeout;
    let Some(head) = stream_connection::read_head(&mut stream, timeout).await else {
        tracing::debug!("no request within header-read-timeout");
        return None;
    };
    if let Some(request) = stream_connection::event_stream_request(&head) {
        drop(head);
        return stream_connection::respond(serving.app, stream, request, serving.handle).await;
    }
    serve_with_hyper(serving, stream, head.freeze()).await;
    None
}

/// Serves the connection with hyper (HTTP/1.1 or HTTP/2), `head` first.
async fn serve_with_hyper<S>(serving: Serving, stream: S, head: bytes::Bytes)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Serving {
        app,
        builder,
        watcher,
        handle,
    } = serving;
    let header_read_timeout = app.config.header_read_timeout;
    let cut = handle.cut.clone();
    let served = Arc::new(AtomicBool::new(false));
    let first_request = served.clone();
    let service = service_fn(move |request| {
        first_request.store(true, Relaxed);
        let app = app.clone();
        let handle = handle.clone();
        async move { Ok::<_, std::convert::Infallible>(http::handle(app, request, &handle).await) }
    });
    let io = TokioIo::new(Rewind::new(head, stream));
    let conn = watcher.watch(builder.serve_connection(io, service).into_owned());
    // hyper times out headers only once it knows the protocol; this also covers a client
    // that sends half an HTTP/2 preface and nothing more.
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
        _ = cut.wait() => tracing::debug!("connection cut"),
        _ = silent => tracing::debug!("no request within header-read-timeout"),
    }
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

async fn refuse(mut stream: TcpStream, answer: &'static [u8]) {
    let write = async {
        stream.write_all(answer).await?;
        stream.shutdown().await
    };
    if let Err(err) = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(error = %err, "refusing an over-capacity connection");
    }
}
