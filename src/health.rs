//! `ssehub health`: asks the hub at the configured address for `/healthz`, for container
//! health checks in images without curl.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::tls::TlsError;

/// Longest the whole probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the hub is not healthy, as far as the probe can tell.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{addr}: answered {status:?}")]
    Status { addr: SocketAddr, status: String },
    #[error("{addr}: no answer within {PROBE_TIMEOUT:?}")]
    Timeout { addr: SocketAddr },
}

/// `GET /healthz` on `config.listen` (loopback when it listens on every address), over TLS
/// when the hub serves TLS, trusting exactly its configured certificate.
pub async fn probe(config: &Config) -> Result<(), ProbeError> {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let connector = match &config.tls_cert {
        Some(cert) => Some(crate::tls::probe_connector(cert)?),
        None => None,
    };
    let io = |source| ProbeError::Io { addr, source };
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(io)?;
        match connector {
            None => ask(tcp, addr).await.map_err(io),
            Some(connector) => {
                let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                let tls = connector.connect(name, tcp).await.map_err(io)?;
                ask(tls, addr).await.map_err(io)
            }
        }
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| ProbeError::Timeout { addr })??;
    if answer.starts_with(b"HTTP/1.1 200 ") {
        return Ok(());
    }
    let status = answer.split(|&b| b == b'\r').next().unwrap_or_default();
    Err(ProbeError::Status {
        addr,
        status: String::from_utf8_lossy(status).into_owned(),
    })
}

/// Sends the request and reads the answer's first 4 KiB (or all of a shorter one).
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
) -> std::io::Result<Vec<u8>> {
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(256);
    let read = (&mut stream).take(4096).read_to_end(&mut answer).await;
    // A TLS peer may close without close_notify after a complete answer.
    match read {
        Err(err) if answer.is_empty() => Err(err),
        _ => Ok(answer),
    }
}
