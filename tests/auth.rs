mod common;

// Access control over real sockets: JWTs (HS256, RS256, ES256) for publishers and subscribers,
// every refusal (401 missing / invalid / expired / not yet valid, 403 outside the claims), token
// sources (bearer, cookie, `?access_token=`), separate keys, public channels, streams ending when
// their token expires, and the `ssehub token` / `check-config` commands of the binary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::node::{self, free_port, Server};
use common::{assert_quiet, request, seq, Hub, Response, SseClient, SseEvent};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};
use ssehub::config::KeySpec;

/// Bound on every single wait in this file.
const T: Duration = Duration::from_secs(5);
/// Bound on one run of `openssl` or of the `ssehub` binary as a command.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The hub's HS256 secret in most tests (at least 32 bytes).
const SECRET: &str = "ssehub-test-secret-0123456789abcdefghij";
/// Another valid secret: tokens signed with it must not pass a hub holding [`SECRET`].
const OTHER_SECRET: &str = "another-test-secret-9876543210zyxwvutsrq";
/// A token lifetime long enough for any test.
const HOUR: i64 = 3600;

// ---------------------------------------------------------------------------------------------
// Tokens

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Claims allowing `publish` and `subscribe` patterns, expiring `ttl` seconds from now.
fn claims(publish: &[&str], subscribe: &[&str], ttl: i64) -> Value {
    json!({
        "exp": unix_now() + ttl,
        "ssehub": {"publish": publish, "subscribe": subscribe},
    })
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("sign a test token")
}

/// An HS256 token signed with `secret`.
fn hs256(secret: &str, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

/// A token with every permission for an hour, signed with [`SECRET`].
fn admin() -> String {
    hs256(SECRET, &claims(&["*"], &["*"], HOUR))
}

/// Base64url without padding (RFC 4648 §5), as JWS segments use it.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWS assembled by hand from a JSON header, JSON claims and a signature segment.
fn hand_token(header: &Value, claims: &Value, signature: &str) -> String {
    let header = b64url(&serde_json::to_vec(header).unwrap());
    let payload = b64url(&serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.{signature}")
}

// ---------------------------------------------------------------------------------------------
// Key pairs made with the `openssl` command

/// A directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ssehub-auth-test-{}-{}-{name}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn file(&self, name: &str) -> String {
        self.0
            .join(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn openssl(args: &[&str]) {
    let output = common::run_program("openssl", "openssl", args, RUN_TIMEOUT).await;
    assert!(
        output.status.success(),
        "openssl {args:?} failed with {}: {}",
        output.status,
        text(&output.stderr)
    );
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyKind {
    /// RSA 2048, RS256.
    Rsa,
    /// EC P-256, ES256.
    Ec,
}

impl KeyKind {
    fn algorithm(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::Ec => Algorithm::ES256,
        }
    }
}

/// PEM files of one key pair: the private key in PKCS#8, the public key in SPKI.
struct KeyPair {
    kind: KeyKind,
    private: String,
    public: String,
}

impl KeyPair {
    async fn generate(dir: &TempDir, kind: KeyKind, name: &str) -> KeyPair {
        let private = dir.file(&format!("{name}-private.pem"));
        let public = dir.file(&format!("{name}-public.pem"));
        match kind {
            KeyKind::Rsa => {
                openssl(&[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    &private,
                ])
                .await;
            }
            KeyKind::Ec => {
                // `ecparam -genkey` writes SEC1 ("EC PRIVATE KEY"); jsonwebtoken reads PKCS#8.
                let sec1 = dir.file(&format!("{name}-sec1.pem"));
                openssl(&[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &sec1,
                ])
                .await;
                openssl(&[
                    "pkcs8", "-topk8", "-nocrypt", "-in", &sec1, "-out", &private,
                ])
                .await;
            }
        }
        openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]).await;
        KeyPair {
            kind,
            private,
            public,
        }
    }

    /// The hub's key setting: `file:` and the public key.
    fn spec(&self) -> KeySpec {
        KeySpec(format!("file:{}", self.public))
    }

    /// A token signed with the private key (RS256 or ES256).
    fn sign(&self, claims: &Value) -> String {
        let pem = std::fs::read(&self.private).expect("read private key");
        let key = match self.kind {
            KeyKind::Rsa => EncodingKey::from_rsa_pem(&pem),
            KeyKind::Ec => EncodingKey::from_ec_pem(&pem),
        }
        .expect("private key PEM");
        sign(self.kind.algorithm(), &key, claims)
    }
}

// ---------------------------------------------------------------------------------------------
// Requests carrying a token

/// How a request carries its token.
#[derive(Debug, Clone, Copy)]
enum Pass<'a> {
    Anonymous,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// `Cookie: <name>=<token>` among other cookies.
    Cookie(&'a str, &'a str),
    /// `?access_token=<token>`.
    Query(&'a str),
}

impl Pass<'_> {
    fn path(self, path: &str) -> String {
        match self {
            Pass::Query(token) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}access_token={token}")
            }
            _ => path.to_owned(),
        }
    }

    fn headers(self) -> Vec<(&'static str, String)> {
        match self {
            Pass::Bearer(token) => vec![("Authorization", format!("Bearer {token}"))],
            Pass::Cookie(name, token) => {
                vec![("Cookie", format!("theme=dark; {name}={token}; lang=en"))]
            }
            Pass::Anonymous | Pass::Query(_) => Vec::new(),
        }
    }
}

fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// `POST /publish` with a JSON body.
async fn publish_as(hub: &Hub, pass: Pass<'_>, body: Value) -> Response {
    let mut headers = pass.headers();
    headers.push(("Content-Type", "application/json".into()));
    let body = serde_json::to_vec(&body).unwrap();
    request(
        hub.addr,
        "POST",
        &pass.path("/publish"),
        &as_refs(&headers),
        &body,
    )
    .await
}

/// `POST /publish/<channel>` with `data` as a `text/plain` body.
async fn publish_raw_as(hub: &Hub, pass: Pass<'_>, channel: &str, data: &str) -> Response {
    let mut headers = pass.headers();
    headers.push(("Content-Type", "text/plain".into()));
    let path = pass.path(&format!("/publish/{channel}"));
    request(hub.addr, "POST", &path, &as_refs(&headers), data.as_bytes()).await
}

/// Publishes one event to `channel` and returns its id, checking the 200 receipt.
async fn published(hub: &Hub, pass: Pass<'_>, channel: &str, data: &str) -> String {
    let response = publish_as(hub, pass, json!({"channel": channel, "data": data})).await;
    assert_eq!(
        response.status,
        200,
        "publishing to {channel} with {pass:?}: {}",
        response.text()
    );
    let receipt = response.json();
    assert_eq!(receipt["channel"], channel, "receipt {receipt}");
    receipt["id"].as_str().expect("receipt id").to_owned()
}

/// Opens `GET path` as an event stream, checking it opened (200, `text/event-stream`).
async fn open(hub: &Hub, pass: Pass<'_>, path: &str) -> SseClient {
    let headers = pass.headers();
    let client = SseClient::connect(hub.addr, &pass.path(path), &as_refs(&headers)).await;
    assert_eq!(client.status, 200, "GET {path} with {pass:?}");
    assert_eq!(
        client.header("content-type"),
        Some("text/event-stream"),
        "GET {path} with {pass:?}"
    );
    client
}

/// `GET path` expecting a refusal: a complete response within [`T`], not a stream.
async fn refused_subscribe(hub: &Hub, pass: Pass<'_>, path: &str) -> Response {
    let headers = pass.headers();
    let (full_path, headers) = (pass.path(path), as_refs(&headers));
    let get = request(hub.addr, "GET", &full_path, &headers, b"");
    tokio::time::timeout(T, get).await.unwrap_or_else(|_| {
        panic!("GET {path} with {pass:?} was not refused within {T:?} (a stream opened?)")
    })
}

/// `status` with a JSON `{"error": ...}` containing `needle`; a 401 also carries
/// `WWW-Authenticate: Bearer`.
fn assert_refused(response: &Response, status: u16, needle: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: body {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    let body = response.json();
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: body has no string \"error\": {body}"));
    assert!(
        error.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: error {error:?} does not mention {needle:?}"
    );
    if status == 401 {
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer"),
            "{what}: 401 without WWW-Authenticate: Bearer"
        );
    }
}

async fn next(client: &mut SseClient) -> SseEvent {
    client
        .next_event(T)
        .await
        .expect("stream ended instead of delivering an event")
}

/// Proves nothing was ever published to `channel`: its live subscriber `client` sees nothing, the
/// next event on it is the channel's first, and a replay from `earliest` holds only that event.
async fn assert_nothing_published(hub: &Hub, client: &mut SseClient, channel: &str) {
    assert_quiet(client, "no event expected here").await;
    let marker = published(hub, Pass::Bearer(&admin()), channel, "marker").await;
    assert_eq!(seq(&marker), 1, "a refused publish appended to {channel}");
    let event = next(client).await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (&*marker, "marker")
    );
    let token = admin();
    let mut replay = open(
        hub,
        Pass::Bearer(&token),
        &format!("/events/{channel}?lastEventId=earliest"),
    )
    .await;
    let event = next(&mut replay).await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (&*marker, "marker"),
        "first event of {channel}'s history"
    );
    assert_quiet(&mut replay, "no event expected here").await;
}

async fn hub_with_key(spec: KeySpec) -> Hub {
    Hub::start_with(move |c| c.jwt_key = Some(spec)).await
}

async fn hs256_hub() -> Hub {
    hub_with_key(KeySpec(SECRET.into())).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. HS256: what passes and every refusal

#[tokio::test]
async fn hs256_token_publishes_and_subscribes_within_its_patterns() {
    let hub = hs256_hub().await;
    let token = hs256(SECRET, &claims(&["chat/*"], &["chat/*", "status"], HOUR));
    let pass = Pass::Bearer(&token);

    let mut sub = open(&hub, pass, "/events/chat/room").await;
    let mut multi = open(&hub, pass, "/events?channel=chat/room&channel=status").await;
    let id = published(&hub, pass, "chat/room", "hello").await;
    let event = next(&mut sub).await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (&*id, "hello"));
    // A multi-channel stream's ids are cursors over all its channels: compare the data.
    assert_eq!(next(&mut multi).await.data, "hello");
    // The raw-body form too.
    let response = publish_raw_as(&hub, pass, "chat/room", "raw").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(next(&mut sub).await.data, "raw");

    // `chat/*` covers everything under `chat/`, and nothing else.
    for channel in ["chat", "chatter/x", "status"] {
        let response = publish_as(&hub, pass, json!({"channel": channel, "data": "x"})).await;
        assert_refused(&response, 403, channel, &format!("publish to {channel}"));
    }
    published(&hub, pass, "chat/a/b", "deep").await;
    hub.stop().await;
}

#[tokio::test]
async fn wrong_secret_alg_none_wrong_algorithm_and_tampered_tokens_are_401() {
    let hub = hs256_hub().await;
    let dir = TempDir::new("forged");
    let rsa = KeyPair::generate(&dir, KeyKind::Rsa, "rsa").await;
    let all = claims(&["*"], &["*"], HOUR);
    let good = hs256(SECRET, &all);
    let segments: Vec<&str> = good.split('.').collect();
    // The hand-built segments are exactly what a real signer produces.
    assert_eq!(
        b64url(&serde_json::to_vec(&all).unwrap()),
        segments[1],
        "hand-made base64url of the claims"
    );
    let mut tampered_claims = claims(&["*"], &["*"], HOUR);
    tampered_claims["ssehub"]["publish"] = json!(["*", "extra"]);

    let forged = [
        ("signed with another secret", hs256(OTHER_SECRET, &all)),
        (
            "alg none, empty signature",
            hand_token(&json!({"alg": "none", "typ": "JWT"}), &all, ""),
        ),
        (
            "alg None, empty signature",
            hand_token(&json!({"alg": "None"}), &all, ""),
        ),
        (
            "alg none, valid HS256 signature kept",
            hand_token(&json!({"alg": "none", "typ": "JWT"}), &all, segments[2]),
        ),
        (
            "HS256 header, empty signature",
            hand_token(&json!({"alg": "HS256", "typ": "JWT"}), &all, ""),
        ),
        ("RS256 with a real RSA key", rsa.sign(&all)),
        (
            "HS512 with the right secret",
            sign(
                Algorithm::HS512,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                &all,
            ),
        ),
        (
            "claims changed after signing",
            hand_token(
                &json!({"typ": "JWT", "alg": "HS256"}),
                &tampered_claims,
                segments[2],
            ),
        ),
        ("not a JWT", "not-a-token".to_owned()),
        (
            "no exp claim",
            hs256(
                SECRET,
                &json!({"ssehub": {"publish": ["*"], "subscribe": ["*"]}}),
            ),
        ),
    ];
    for (what, token) in &forged {
        let pass = Pass::Bearer(token);
        let response = publish_as(&hub, pass, json!({"channel": "c", "data": "x"})).await;
        assert_refused(&response, 401, "token", &format!("publish, {what}"));
        let response = refused_subscribe(&hub, pass, "/events/c").await;
        assert_refused(&response, 401, "token", &format!("subscribe, {what}"));
    }
    // The genuine token passes the same hub.
    let mut sub = open(&hub, Pass::Bearer(&good), "/events/c").await;
    let id = published(&hub, Pass::Bearer(&good), "c", "genuine").await;
    assert_eq!(next(&mut sub).await.id, id, "only the genuine event");
    hub.stop().await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_401() {
    let hub = hs256_hub().await;
    let expired = hs256(SECRET, &claims(&["*"], &["*"], -10));
    let mut early_claims = claims(&["*"], &["*"], HOUR);
    early_claims["nbf"] = json!(unix_now() + 600);
    let early = hs256(SECRET, &early_claims);
    for (token, needle, what) in [
        (&expired, "expired", "expired"),
        (&early, "not valid yet", "nbf in the future"),
    ] {
        let pass = Pass::Bearer(token);
        let response = publish_as(&hub, pass, json!({"channel": "c", "data": "x"})).await;
        assert_refused(&response, 401, needle, &format!("publish, {what}"));
        let response = refused_subscribe(&hub, pass, "/events/c").await;
        assert_refused(&response, 401, needle, &format!("subscribe, {what}"));
    }
    // nbf in the past is fine.
    let mut valid_claims = claims(&["*"], &["*"], HOUR);
    valid_claims["nbf"] = json!(unix_now() - 60);
    let valid = hs256(SECRET, &valid_claims);
    published(&hub, Pass::Bearer(&valid), "c", "ok").await;
    hub.stop().await;
}

#[tokio::test]
async fn publish_outside_the_claims_is_403_and_publishes_nothing_of_the_request() {
    let hub = hs256_hub().await;
    let token = hs256(SECRET, &claims(&["chat/*"], &["chat/*"], HOUR));
    let pass = Pass::Bearer(&token);
    let mut sub = open(&hub, pass, "/events/chat/ok").await;

    let requests = [
        json!([
            {"channel": "chat/ok", "data": "1"},
            {"channel": "secret/x", "data": "2"},
        ]),
        json!({"events": [
            {"channel": "secret/x", "data": "1"},
            {"channel": "chat/ok", "data": "2"},
        ]}),
        json!({"channels": ["chat/ok", "secret/x"], "data": "1"}),
    ];
    for body in requests {
        let response = publish_as(&hub, pass, body.clone()).await;
        assert_refused(&response, 403, "\"secret/x\"", &body.to_string());
        assert!(
            response.header("www-authenticate").is_none(),
            "403 must not ask for credentials"
        );
    }
    let response = publish_raw_as(&hub, pass, "secret/x", "raw").await;
    assert_refused(&response, 403, "\"secret/x\"", "raw publish");

    assert_nothing_published(&hub, &mut sub, "chat/ok").await;
    hub.stop().await;
}

#[tokio::test]
async fn subscribe_outside_the_claims_is_403() {
    let hub = hs256_hub().await;
    let token = hs256(SECRET, &claims(&["*"], &["chat/*"], HOUR));
    let pass = Pass::Bearer(&token);
    for (path, channel) in [
        ("/events/secret", "secret"),
        ("/events/chat", "chat"),
        ("/events?channel=chat/ok&channel=secret", "secret"),
    ] {
        let response = refused_subscribe(&hub, pass, path).await;
        assert_refused(&response, 403, &format!("{channel:?}"), path);
        assert!(response.header("www-authenticate").is_none(), "{path}");
    }
    open(&hub, pass, "/events/chat/ok").await;
    hub.stop().await;
}

#[tokio::test]
async fn no_token_is_401_with_www_authenticate() {
    let hub = hs256_hub().await;
    let response = publish_as(&hub, Pass::Anonymous, json!({"channel": "c", "data": "x"})).await;
    assert_refused(&response, 401, "token is required", "anonymous publish");
    let response = publish_raw_as(&hub, Pass::Anonymous, "c", "x").await;
    assert_refused(&response, 401, "token is required", "anonymous raw publish");
    let response = refused_subscribe(&hub, Pass::Anonymous, "/events/c").await;
    assert_refused(&response, 401, "token is required", "anonymous subscribe");
    // An empty bearer token or cookie is no token.
    let response = refused_subscribe(&hub, Pass::Bearer(""), "/events/c").await;
    assert_refused(&response, 401, "token", "empty bearer");
    let response = refused_subscribe(&hub, Pass::Cookie("ssehub_token", ""), "/events/c").await;
    assert_refused(&response, 401, "token", "empty cookie");
    hub.stop().await;
}

#[tokio::test]
async fn unauthenticated_publish_is_refused_before_the_body_is_read() {
    // A hub that waited for the announced body would answer only after a minute.
    let hub = Hub::start_with(|c| {
        c.jwt_key = Some(KeySpec(SECRET.into()));
        c.body_read_timeout = Duration::from_secs(60);
    })
    .await;
    let forged = hs256(OTHER_SECRET, &claims(&["*"], &["*"], HOUR));
    for (what, auth) in [
        ("no token", None),
        ("wrong secret", Some(format!("Bearer {forged}"))),
    ] {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Content-Length", "500000"),
        ];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        // Only the head is sent; the 500 kB body never comes.
        let answer = tokio::time::timeout(T, request(hub.addr, "POST", "/publish", &headers, b""))
            .await
            .unwrap_or_else(|_| {
                panic!("{what}: no answer within {T:?}: the hub waited for the body")
            });
        assert_refused(&answer, 401, "token", what);
    }
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. RS256 and ES256 with a public key file

async fn public_key_file_accepts_only_its_private_keys_tokens(kind: KeyKind) {
    let dir = TempDir::new(&format!("{kind:?}"));
    let ours = KeyPair::generate(&dir, kind, "ours").await;
    let theirs = KeyPair::generate(&dir, kind, "theirs").await;
    let other_kind = match kind {
        KeyKind::Rsa => KeyKind::Ec,
        KeyKind::Ec => KeyKind::Rsa,
    };
    let different = KeyPair::generate(&dir, other_kind, "different").await;
    let hub = hub_with_key(ours.spec()).await;

    let token = ours.sign(&claims(&["room/*"], &["room/*"], HOUR));
    let pass = Pass::Bearer(&token);
    let mut sub = open(&hub, pass, "/events/room/1").await;
    let id = published(&hub, pass, "room/1", "signed").await;
    let event = next(&mut sub).await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (&*id, "signed"));
    let response = publish_as(&hub, pass, json!({"channel": "lobby", "data": "x"})).await;
    assert_refused(&response, 403, "\"lobby\"", "outside the claims");

    let all = claims(&["*"], &["*"], HOUR);
    let public_pem = std::fs::read(&ours.public).unwrap();
    let forged = [
        ("signed by another key pair", theirs.sign(&all)),
        (
            "signed with the other asymmetric algorithm",
            different.sign(&all),
        ),
        (
            "HS256 keyed with the public key PEM",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&public_pem),
                &all,
            ),
        ),
        (
            "alg none",
            hand_token(&json!({"alg": "none", "typ": "JWT"}), &all, ""),
        ),
    ];
    for (what, token) in &forged {
        let pass = Pass::Bearer(token);
        let response = publish_as(&hub, pass, json!({"channel": "room/1", "data": "x"})).await;
        assert_refused(
            &response,
            401,
            "token",
            &format!("{kind:?} hub, publish, {what}"),
        );
        let response = refused_subscribe(&hub, pass, "/events/room/1").await;
        assert_refused(
            &response,
            401,
            "token",
            &format!("{kind:?} hub, subscribe, {what}"),
        );
    }
    let expired = ours.sign(&claims(&["*"], &["*"], -10));
    let response = refused_subscribe(&hub, Pass::Bearer(&expired), "/events/room/1").await;
    assert_refused(&response, 401, "expired", &format!("{kind:?} hub, expired"));
    assert_quiet(&mut sub, "no event expected here").await;
    hub.stop().await;
}

#[tokio::test]
async fn rs256_public_key_file_accepts_only_its_private_keys_tokens() {
    public_key_file_accepts_only_its_private_keys_tokens(KeyKind::Rsa).await;
}

#[tokio::test]
async fn es256_public_key_file_accepts_only_its_private_keys_tokens() {
    public_key_file_accepts_only_its_private_keys_tokens(KeyKind::Ec).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Token sources

#[tokio::test]
async fn bearer_cookie_and_query_tokens_work_for_subscribe_and_json_publish() {
    let hub = hs256_hub().await;
    let token = hs256(SECRET, &claims(&["src/*"], &["src/*"], HOUR));
    let lowercase = format!("bearer {token}");
    for pass in [
        Pass::Bearer(&token),
        Pass::Cookie("ssehub_token", &token),
        Pass::Query(&token),
    ] {
        let mut sub = open(&hub, pass, "/events/src/a").await;
        let mut multi = open(&hub, pass, "/events?channel=src/a&channel=src/b").await;
        let id = published(&hub, pass, "src/a", "via").await;
        let event = next(&mut sub).await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (&*id, "via"),
            "{pass:?}"
        );
        assert_eq!(next(&mut multi).await.data, "via", "{pass:?}");
    }
    // `bearer` in lower case is accepted as well.
    let response = request(
        hub.addr,
        "POST",
        "/publish",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &lowercase),
        ],
        br#"{"channel": "src/a", "data": "lower"}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    hub.stop().await;
}

#[tokio::test]
async fn bearer_cookie_and_query_tokens_work_for_raw_body_publish() {
    let hub = hs256_hub().await;
    let token = hs256(SECRET, &claims(&["src/*"], &["src/*"], HOUR));
    let mut sub = open(&hub, Pass::Bearer(&token), "/events/src/raw").await;
    for pass in [
        Pass::Bearer(&token),
        Pass::Cookie("ssehub_token", &token),
        Pass::Query(&token),
    ] {
        let response = publish_raw_as(&hub, pass, "src/raw", "raw body").await;
        assert_eq!(
            response.status,
            200,
            "POST /publish/src/raw with {pass:?}: {}",
            response.text()
        );
        assert_eq!(next(&mut sub).await.data, "raw body", "{pass:?}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn custom_cookie_name_carries_the_token_and_the_default_one_no_longer_does() {
    let hub = Hub::start_with(|c| {
        c.jwt_key = Some(KeySpec(SECRET.into()));
        c.jwt_cookie = "my_jwt".into();
    })
    .await;
    let token = hs256(SECRET, &claims(&["*"], &["*"], HOUR));
    let custom = Pass::Cookie("my_jwt", &token);
    let mut sub = open(&hub, custom, "/events/k").await;
    let id = published(&hub, custom, "k", "cookie").await;
    assert_eq!(next(&mut sub).await.id, id);

    let default = Pass::Cookie("ssehub_token", &token);
    let response = refused_subscribe(&hub, default, "/events/k").await;
    assert_refused(
        &response,
        401,
        "my_jwt",
        "subscribe with the default cookie name",
    );
    let response = publish_as(&hub, default, json!({"channel": "k", "data": "x"})).await;
    assert_refused(
        &response,
        401,
        "my_jwt",
        "publish with the default cookie name",
    );
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Separate publisher and subscriber keys

const PUBLISHER_SECRET: &str = "publisher-secret-AAAAAAAAAAAAAAAAAAAAAAAA";
const SUBSCRIBER_SECRET: &str = "subscriber-secret-BBBBBBBBBBBBBBBBBBBBBBBB";

#[tokio::test]
async fn publisher_and_subscriber_keys_are_not_interchangeable() {
    let hub = Hub::start_with(|c| {
        c.publisher_jwt_key = Some(KeySpec(PUBLISHER_SECRET.into()));
        c.subscriber_jwt_key = Some(KeySpec(SUBSCRIBER_SECRET.into()));
    })
    .await;
    let a = hs256(PUBLISHER_SECRET, &claims(&["*"], &["*"], HOUR));
    let b = hs256(SUBSCRIBER_SECRET, &claims(&["*"], &["*"], HOUR));

    let mut sub = open(&hub, Pass::Bearer(&b), "/events/split").await;
    let id = published(&hub, Pass::Bearer(&a), "split", "from A").await;
    assert_eq!(next(&mut sub).await.id, id);

    let response = refused_subscribe(&hub, Pass::Bearer(&a), "/events/split").await;
    assert_refused(
        &response,
        401,
        "invalid token",
        "subscribing with the publisher's token",
    );
    let response = publish_as(
        &hub,
        Pass::Bearer(&b),
        json!({"channel": "split", "data": "x"}),
    )
    .await;
    assert_refused(
        &response,
        401,
        "invalid token",
        "publishing with the subscriber's token",
    );
    let response = publish_as(
        &hub,
        Pass::Anonymous,
        json!({"channel": "split", "data": "x"}),
    )
    .await;
    assert_refused(&response, 401, "token is required", "anonymous publish");
    let response = refused_subscribe(&hub, Pass::Anonymous, "/events/split").await;
    assert_refused(&response, 401, "token is required", "anonymous subscribe");
    assert_quiet(&mut sub, "no event expected here").await;
    hub.stop().await;
}

#[tokio::test]
async fn publisher_key_alone_refuses_anonymous_publishers_and_leaves_subscribing_open() {
    let hub =
        Hub::start_with(|c| c.publisher_jwt_key = Some(KeySpec(PUBLISHER_SECRET.into()))).await;
    let mut sub = open(&hub, Pass::Anonymous, "/events/open").await;
    let response = publish_as(
        &hub,
        Pass::Anonymous,
        json!({"channel": "open", "data": "x"}),
    )
    .await;
    assert_refused(&response, 401, "token is required", "anonymous publish");
    let response = publish_raw_as(&hub, Pass::Anonymous, "open", "x").await;
    assert_refused(&response, 401, "token is required", "anonymous raw publish");

    let a = hs256(PUBLISHER_SECRET, &claims(&["open"], &[], HOUR));
    let id = published(&hub, Pass::Bearer(&a), "open", "keyed").await;
    let event = next(&mut sub).await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (&*id, "keyed"));
    hub.stop().await;
}

#[tokio::test]
async fn subscriber_key_alone_leaves_publishing_open() {
    let hub =
        Hub::start_with(|c| c.subscriber_jwt_key = Some(KeySpec(SUBSCRIBER_SECRET.into()))).await;
    let response = refused_subscribe(&hub, Pass::Anonymous, "/events/feed").await;
    assert_refused(&response, 401, "token is required", "anonymous subscribe");
    let b = hs256(SUBSCRIBER_SECRET, &claims(&[], &["feed"], HOUR));
    let mut sub = open(&hub, Pass::Bearer(&b), "/events/feed").await;
    let id = published(&hub, Pass::Anonymous, "feed", "anonymous").await;
    assert_eq!(next(&mut sub).await.id, id);
    hub.stop().await;
}

#[tokio::test]
async fn side_specific_key_overrides_jwt_key_for_that_side_only() {
    let hub = Hub::start_with(|c| {
        c.jwt_key = Some(KeySpec(SECRET.into()));
        c.publisher_jwt_key = Some(KeySpec(PUBLISHER_SECRET.into()));
    })
    .await;
    let shared = hs256(SECRET, &claims(&["*"], &["*"], HOUR));
    let a = hs256(PUBLISHER_SECRET, &claims(&["*"], &["*"], HOUR));
    let mut sub = open(&hub, Pass::Bearer(&shared), "/events/o").await;
    let response = refused_subscribe(&hub, Pass::Bearer(&a), "/events/o").await;
    assert_refused(
        &response,
        401,
        "invalid token",
        "subscribe with the publisher key",
    );
    let response = publish_as(
        &hub,
        Pass::Bearer(&shared),
        json!({"channel": "o", "data": "x"}),
    )
    .await;
    assert_refused(
        &response,
        401,
        "invalid token",
        "publish with the shared key",
    );
    let id = published(&hub, Pass::Bearer(&a), "o", "override").await;
    assert_eq!(next(&mut sub).await.id, id);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Public channels

#[tokio::test]
async fn public_channels_are_readable_without_a_token_and_nothing_else_is() {
    let hub = Hub::start_with(|c| {
        c.jwt_key = Some(KeySpec(SECRET.into()));
        c.public_channels = vec!["news/*".into(), "status".into()];
    })
    .await;
    let anon = Pass::Anonymous;
    let mut news = open(&hub, anon, "/events/news/a").await;
    let mut status = open(&hub, anon, "/events/status").await;
    let mut both = open(&hub, anon, "/events?channel=news/a&channel=status").await;

    for path in [
        "/events/private",
        "/events/news",
        "/events/status/x",
        "/events?channel=news/a&channel=private",
    ] {
        let response = refused_subscribe(&hub, anon, path).await;
        assert_refused(&response, 401, "token is required", path);
    }
    let private = hs256(SECRET, &claims(&[], &["private"], HOUR));
    let mut mixed = open(
        &hub,
        Pass::Bearer(&private),
        "/events?channel=news/a&channel=private",
    )
    .await;
    // A token covering only public channels' neighbours is still refused for others.
    let response = refused_subscribe(
        &hub,
        Pass::Bearer(&private),
        "/events?channel=news/a&channel=other",
    )
    .await;
    assert_refused(&response, 403, "\"other\"", "token without `other`");

    // Publishing to a public channel still needs a publisher token.
    let response = publish_as(&hub, anon, json!({"channel": "news/a", "data": "x"})).await;
    assert_refused(
        &response,
        401,
        "token is required",
        "anonymous publish to news/a",
    );
    let response = publish_as(
        &hub,
        Pass::Bearer(&private),
        json!({"channel": "news/a", "data": "x"}),
    )
    .await;
    assert_refused(
        &response,
        403,
        "\"news/a\"",
        "publish without publish claims",
    );
    assert_quiet(&mut news, "no event expected here").await;

    let publisher = admin();
    let headline = published(&hub, Pass::Bearer(&publisher), "news/a", "headline").await;
    let up = published(&hub, Pass::Bearer(&publisher), "status", "up").await;
    published(&hub, Pass::Bearer(&publisher), "private", "secret").await;
    assert_eq!(next(&mut news).await.id, headline);
    assert_eq!(next(&mut status).await.id, up);
    // Multi-channel streams carry cursor ids: compare the data.
    let got: Vec<String> = both
        .events(2, T)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(got, ["headline", "up"]);
    let got: Vec<String> = mixed
        .events(2, T)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(got, ["headline", "secret"]);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. A stream ends when its token expires

#[tokio::test]
async fn stream_ends_cleanly_when_its_token_expires() {
    let hub = hs256_hub().await;
    let exp = unix_now() + 2;
    let short = hs256(
        SECRET,
        &json!({"exp": exp, "ssehub": {"subscribe": ["exp"]}}),
    );
    let long = hs256(SECRET, &claims(&[], &["exp"], HOUR));
    let mut expiring = open(&hub, Pass::Cookie("ssehub_token", &short), "/events/exp").await;
    let mut lasting = open(&hub, Pass::Bearer(&long), "/events/exp").await;

    let id = published(&hub, Pass::Bearer(&admin()), "exp", "before expiry").await;
    assert_eq!(next(&mut expiring).await.id, id);
    assert_eq!(next(&mut lasting).await.id, id);

    expiring.expect_end(T).await;
    let ended_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        expiring.end_reason(),
        Some("end of body"),
        "the stream must end with the end of its chunked body"
    );
    assert!(
        ended_ms >= exp * 1000 - 200,
        "the stream ended {} ms before its token's exp",
        exp * 1000 - ended_ms
    );

    // Only the expired stream ended.
    let id = published(&hub, Pass::Bearer(&admin()), "exp", "after expiry").await;
    assert_eq!(next(&mut lasting).await.id, id);

    // Once `exp` has passed (1-second granularity), reconnecting with the token is refused.
    let past_exp = UNIX_EPOCH + Duration::from_secs(exp as u64 + 1);
    if let Ok(wait) = past_exp.duration_since(SystemTime::now()) {
        assert!(wait <= Duration::from_secs(3), "exp is {wait:?} away");
        tokio::time::sleep(wait + Duration::from_millis(50)).await;
    }
    let response =
        refused_subscribe(&hub, Pass::Cookie("ssehub_token", &short), "/events/exp").await;
    assert_refused(
        &response,
        401,
        "expired",
        "reconnecting with the expired token",
    );
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. The binary: `ssehub token`, `check-config`, startup

/// `ssehub token args...`: the printed token, checking exit 0 and a single line.
async fn mint(args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let output = node::run(&all, &[]).await;
    assert!(
        output.status.success(),
        "ssehub {all:?} failed with {}: {}",
        output.status,
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "one line expected: {stdout:?}");
    assert_eq!(token.split('.').count(), 3, "not a JWS: {token:?}");
    token.to_owned()
}

#[tokio::test]
async fn token_subcommand_mints_a_token_the_hub_accepts() {
    let token = mint(&[
        "--key",
        SECRET,
        "--publish",
        "chat/*",
        "--subscribe",
        "chat/*,status",
        "--ttl",
        "1h",
    ])
    .await;

    // Its claims: an hour of life and the given patterns.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("the printed token verifies with the secret")
    .claims;
    let ttl = claims["exp"].as_i64().expect("numeric exp") - unix_now();
    assert!(
        (3590..=3600).contains(&ttl),
        "exp {ttl} s from now: {claims}"
    );
    assert_eq!(claims["ssehub"]["publish"], json!(["chat/*"]));
    assert_eq!(claims["ssehub"]["subscribe"], json!(["chat/*", "status"]));

    let hub = hs256_hub().await;
    let pass = Pass::Bearer(&token);
    let mut sub = open(&hub, pass, "/events?channel=chat/1&channel=status").await;
    published(&hub, pass, "chat/1", "minted").await;
    assert_eq!(next(&mut sub).await.data, "minted");
    let response = publish_as(&hub, pass, json!({"channel": "status", "data": "x"})).await;
    assert_refused(&response, 403, "\"status\"", "publish outside --publish");
    let response = refused_subscribe(&hub, pass, "/events/other").await;
    assert_refused(&response, 403, "\"other\"", "subscribe outside --subscribe");

    // Another secret's hub refuses it.
    let other = hub_with_key(KeySpec(OTHER_SECRET.into())).await;
    let response = publish_as(&other, pass, json!({"channel": "chat/1", "data": "x"})).await;
    assert_refused(&response, 401, "invalid token", "hub with another secret");
    other.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn token_subcommand_signs_with_rsa_and_ec_private_key_files() {
    let dir = TempDir::new("mint");
    for kind in [KeyKind::Rsa, KeyKind::Ec] {
        let pair = KeyPair::generate(&dir, kind, &format!("{kind:?}")).await;
        let key = format!("file:{}", pair.private);
        let token = mint(&["--key", &key, "--publish", "*", "--subscribe", "*"]).await;
        let header = jsonwebtoken::decode_header(&token).expect("token header");
        assert_eq!(header.alg, kind.algorithm(), "{kind:?}");
        let hub = hub_with_key(pair.spec()).await;
        let mut sub = open(&hub, Pass::Bearer(&token), "/events/m").await;
        let id = published(&hub, Pass::Bearer(&token), "m", "minted").await;
        assert_eq!(next(&mut sub).await.id, id, "{kind:?}");
        hub.stop().await;
    }
}

#[tokio::test]
async fn token_subcommand_rejects_an_invalid_ttl_with_exit_2() {
    for ttl in ["soon", "", "-5m", "1 fortnight"] {
        let ttl_arg = format!("--ttl={ttl}");
        let output = node::run(&["token", "--key", SECRET, &ttl_arg], &[]).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "--ttl {ttl:?}: stdout {:?} stderr {:?}",
            text(&output.stdout),
            text(&output.stderr)
        );
        assert!(output.stdout.is_empty(), "--ttl {ttl:?} printed a token");
        assert!(
            text(&output.stderr).contains("--ttl"),
            "--ttl {ttl:?}: {}",
            text(&output.stderr)
        );
    }
}

#[tokio::test]
async fn check_config_never_prints_secrets() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 3] = [
        (&["check-config", "--jwt-key", SECRET], &[]),
        (
            &[
                "check-config",
                "--publisher-jwt-key",
                PUBLISHER_SECRET,
                "--subscriber-jwt-key",
                SUBSCRIBER_SECRET,
            ],
            &[],
        ),
        (&["check-config"], &[("SSEHUB_JWT_KEY", SECRET)]),
    ];
    for (args, envs) in cases {
        let output = node::run(args, envs).await;
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "{args:?}: {stderr}");
        for secret in [SECRET, PUBLISHER_SECRET, SUBSCRIBER_SECRET] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{args:?} {envs:?} printed a secret:\n{stdout}{stderr}"
            );
        }
        assert!(
            stdout.contains("<secret>"),
            "{args:?}: keys not shown as set:\n{stdout}"
        );
    }
    // Keys are checked before anything runs; a key file is not a secret, so its path is shown.
    let output = node::run(&["check-config", "--jwt-key", "file:/keys/public.pem"], &[]).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("/keys/public.pem"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn open_hub_warns_and_keyed_hub_logs_neither_secret_nor_tokens() {
    let open_hub = Server::start("auth-open", &[], &[], false).await;
    let warning = "no JWT key configured";
    assert!(
        open_hub.log_text().contains(warning),
        "no warning for an open hub:\n{}",
        open_hub.log_text()
    );
    drop(open_hub);

    let keyed = Server::start(
        "auth-keyed",
        &["--jwt-key", SECRET],
        &[("RUST_LOG", "debug")],
        false,
    )
    .await;
    let good = admin();
    let forged = hs256(OTHER_SECRET, &claims(&["*"], &["*"], HOUR));
    let addr = keyed.addr;
    let response = request(
        addr,
        "POST",
        &format!("/publish?access_token={good}"),
        &[("Content-Type", "application/json")],
        br#"{"channel": "l", "data": "x"}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    for path in [
        format!("/publish?access_token={forged}"),
        format!("/publish/l?access_token={forged}"),
    ] {
        let response = request(
            addr,
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            b"{}",
        )
        .await;
        assert_eq!(response.status, 401, "{path}: {}", response.text());
    }
    let path = format!("/events/l?access_token={forged}");
    let response = tokio::time::timeout(T, request(addr, "GET", &path, &[], b""))
        .await
        .expect("refused subscribe answers");
    assert_eq!(response.status, 401, "{}", response.text());

    let log = keyed.log_text();
    assert!(
        log.contains("invalid token"),
        "refusals not logged at debug:\n{log}"
    );
    assert!(!log.contains(warning), "keyed hub warns it is open:\n{log}");
    for (what, secret) in [("secret", SECRET), ("token", &good), ("token", &forged)] {
        assert!(!log.contains(secret), "the log holds a {what}:\n{log}");
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !log.contains(signature),
            "the log holds a {what}'s signature:\n{log}"
        );
    }
}

#[tokio::test]
async fn hub_with_a_short_secret_refuses_to_start() {
    let listen = format!("127.0.0.1:{}", free_port());
    let short = "too-short-secret";
    let output = node::run(&["--listen", &listen, "--jwt-key", short], &[]).await;
    // Logs go to stdout, usage errors to stderr: either may carry the message.
    let stderr = text(&output.stdout) + &text(&output.stderr);
    assert!(
        !output.status.success(),
        "started with a short secret: {stderr}"
    );
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    assert!(!stderr.contains(short), "the secret was printed: {stderr}");
}
