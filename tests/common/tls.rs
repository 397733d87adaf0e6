//! Test certificates made with the `openssl` command, and a TLS client that trusts them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A CA and a server certificate for 127.0.0.1 and `localhost` signed by it, in `dir`.
pub struct Certificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `ca.crt`, `server.crt` and `server.key` (EC P-256, one day) into `dir`.
pub fn make_certificates(dir: &Path) -> Certificates {
    const SCRIPT: &str = "set -e
EC='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
openssl req -x509 $EC -days 1 -subj /CN=ssehub-test-ca -keyout ca.key -out ca.crt
openssl req $EC -subj /CN=127.0.0.1 -keyout server.key -out server.csr
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext
openssl x509 -req -days 1 -CAcreateserial -in server.csr -CA ca.crt -CAkey ca.key \\
  -extfile san.ext -out server.crt
";
    std::fs::create_dir_all(dir).expect("create the certificate directory");
    let output = std::process::Command::new("sh")
        .args(["-c", SCRIPT])
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        output.status.success(),
        "making test certificates with openssl (tests/run.sh installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Certificates {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

/// Connects to `addr` over TLS as `127.0.0.1`, trusting only `ca`, offering `alpn` protocols.
pub async fn connect(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA file") {
        roots
            .add(cert.expect("CA certificate"))
            .expect("add the CA");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    tokio::time::timeout(super::REQUEST_TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake")
}

/// One HTTP/1.1 request over TLS (no ALPN offered), answered with `connection: close`:
/// returns the status and the body. For the few plain requests of TLS tests.
pub async fn request(
    addr: SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect(addr, ca, &[]).await;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut answer = Vec::new();
    let exchange = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.read_to_end(&mut answer).await
    };
    // A peer that closes without close_notify is fine: the answer is delimited by its length.
    let _ = tokio::time::timeout(super::REQUEST_TIMEOUT, exchange)
        .await
        .expect("TLS request within the timeout");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no complete answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    (status, body.to_owned())
}
