//! The deploy files under `deploy/`, checked by running what can run here: promtool and a real
//! Prometheus scraping a real hub (with Redis), `systemd-analyze` on the unit, and the real
//! binary on every setting the files give it. What needs a Docker daemon or a Kubernetes cluster
//! (neither exists here) is checked without pretending: the settings, ports, probes, selectors and
//! grace periods the files declare must agree with each other and with what the binary accepts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::node::{free_port, run, Server, BIN};
use common::redis_server::RedisServer;
use common::request;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Bound on one external tool run (promtool, systemd-analyze, cargo metadata).
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on Prometheus starting, scraping and evaluating.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(20);
/// Least time between the end of the drain deadline and the SIGKILL of a container or unit.
const STOP_MARGIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Files and tools

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(&deploy(rel))).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

/// A YAML scalar as text (numbers and booleans too); panics on anything else.
fn scalar(value: &Yaml, what: &str) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("{what}: expected a scalar, got {other:?}"),
    }
}

fn seq<'a>(value: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {value:?}"))
}

fn duration(text: &str, what: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{what}: {text:?}: {e}"))
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("ssehub-deploy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `program` as a child killed on drop, or a panic naming the Debian package that has it.
fn spawn_tool(program: &str, package: &str, command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install {package} (tests/run.sh does)")
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The binary's view of a setup

/// Runs `ssehub args... check-config` with `envs` (and nothing inherited), asserts it accepts
/// them, and returns the effective settings by field name, one line each (`listen` ->
/// `0.0.0.0:8080`, `redis_url` -> `Some("redis://redis:6379")`).
async fn effective_config(
    args: &[&str],
    envs: &[(&str, &str)],
    what: &str,
) -> BTreeMap<String, String> {
    let mut all = args.to_vec();
    all.push("check-config");
    let output = run(&all, envs).await;
    assert_success(&output, &format!("{what}: ssehub {all:?} with {envs:?}"));
    parse_config_debug(&text(&output.stdout))
}

/// Fields of `{:#?}` of the config: a field starts at 4 spaces of indent; deeper lines continue
/// its value (`Some(`, `"x",`, `)`), joined back to one line.
fn parse_config_debug(debug: &str) -> BTreeMap<String, String> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in debug.lines() {
        let Some(rest) = line.strip_prefix("    ") else {
            continue;
        };
        if !rest.starts_with(' ') {
            if let Some((name, value)) = rest.split_once(": ") {
                fields.insert(name.to_owned(), value.trim_end_matches(',').to_owned());
                current = Some(name.to_owned());
            }
            continue;
        }
        let Some(value) = current.as_ref().and_then(|name| fields.get_mut(name)) else {
            continue;
        };
        let item = rest.trim().trim_end_matches(',');
        if !(item.starts_with([')', ']', '}']) || value.ends_with(['(', '[', '{'])) {
            value.push_str(", ");
        }
        value.push_str(item);
    }
    fields
}

fn field<'a>(config: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    config
        .get(name)
        .unwrap_or_else(|| panic!("check-config printed no {name}: {config:?}"))
}

fn listen_port(config: &BTreeMap<String, String>) -> u16 {
    let listen: SocketAddr = field(config, "listen")
        .parse()
        .expect("listen is an address");
    listen.port()
}

fn shutdown_timeout(config: &BTreeMap<String, String>) -> Duration {
    duration(field(config, "shutdown_timeout"), "shutdown_timeout")
}

/// `ssehub --help`.
async fn help_text() -> String {
    let help = run(&["--help"], &[]).await;
    assert_success(&help, "ssehub --help");
    text(&help.stdout)
}

/// Panics unless every `SSEHUB_*` name in `envs` is one the binary reads (it ignores others, so
/// `check-config` cannot catch a misspelt one).
async fn assert_known_env(envs: &[(&str, &str)], what: &str) {
    let help = help_text().await;
    let known: BTreeSet<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .collect();
    assert!(
        known.contains("SSEHUB_LISTEN"),
        "env names from --help: {known:?}"
    );
    for (name, _) in envs {
        assert!(
            known.contains(name),
            "{what}: {name} is not a setting of ssehub"
        );
    }
}

/// A hub in Redis mode (so the Redis metrics exist), with its Redis.
async fn redis_hub(name: &str) -> (RedisServer, Server) {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let hub = Server::start(name, &["--redis-url", &url], &[], false).await;
    (redis, hub)
}

/// Series names a hub exposes: every family, with `_bucket`, `_sum` and `_count` for histograms.
async fn exposed_series(hub: SocketAddr) -> (BTreeSet<String>, BTreeSet<String>) {
    let response = request(hub, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    let mut families = BTreeSet::new();
    let mut series = BTreeSet::new();
    for line in response.text().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        families.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{name}{suffix}"));
            }
        } else {
            series.insert(name.to_owned());
        }
    }
    (families, series)
}

/// The `ssehub_*` metric names a PromQL expression reads (quoted label values skipped).
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut flush = |word: &mut String| {
        if word.starts_with("ssehub_") {
            names.insert(word.clone());
        }
        word.clear();
    };
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            flush(&mut word);
            while let Some(inner) = chars.next() {
                if inner == '\\' {
                    chars.next();
                } else if inner == c {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word);
        }
    }
    flush(&mut word);
    names
}

// ---------------------------------------------------------------------------------------------
// Prometheus: rules, alert tests, dashboard

/// Every alert rule in deploy/prometheus/alerts.yml as (name, expression).
fn alert_rules() -> Vec<(String, String)> {
    let alerts = yaml("prometheus/alerts.yml");
    let mut rules = Vec::new();
    for group in seq(&alerts["groups"], "alerts.yml groups") {
        for rule in seq(&group["rules"], "alerts.yml rules") {
            let name = scalar(&rule["alert"], "alert name");
            rules.push((name, scalar(&rule["expr"], "alert expr")));
        }
    }
    assert!(!rules.is_empty(), "alerts.yml has no rules");
    rules
}

/// Every PromQL expression of the Grafana dashboard.
struct DashboardQueries {
    /// (panel title, expression) of every panel target.
    targets: Vec<(String, String)>,
    /// (selector, label) of every `label_values(selector, label)` variable.
    variables: Vec<(String, String)>,
}

/// The dashboard's queries, after checking its shape (panels with queries, on the grid).
fn dashboard_queries() -> DashboardQueries {
    let path = deploy("prometheus/grafana-dashboard.json");
    let dashboard: Json = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("grafana-dashboard.json is not JSON: {e}"));
    let panels = dashboard["panels"]
        .as_array()
        .expect("dashboard has panels");
    assert!(!panels.is_empty(), "dashboard has no panels");
    let mut ids = BTreeSet::new();
    let mut targets = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64()),
            "panel id repeated: {title}"
        );
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().unwrap_or(99) + grid["w"].as_u64().unwrap_or(99);
        assert!(right <= 24, "panel {title:?} is outside the 24-column grid");
        if panel["type"] == "row" {
            continue;
        }
        let panel_targets = panel["targets"].as_array().expect("panel targets");
        assert!(!panel_targets.is_empty(), "panel {title:?} has no query");
        for target in panel_targets {
            let expr = target["expr"].as_str().expect("target expr");
            targets.push((title.to_owned(), expr.to_owned()));
        }
    }
    let mut variables = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        let query = &variable["query"]["query"];
        let Some(query) = query.as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(...)"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        variables.push((selector.trim().to_owned(), label.trim().to_owned()));
    }
    DashboardQueries { targets, variables }
}

/// `expr` with the dashboard's variables set for the hub scraped as `job`/`instance`.
fn grafana_to_promql(expr: &str, job: &str, instance: &str) -> String {
    let promql = expr
        .replace("$__rate_interval", "1m")
        .replace("$instance", instance)
        .replace("$job", job);
    assert!(
        !promql.contains('$'),
        "unknown dashboard variable in {expr:?}"
    );
    promql
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_checks_config_and_rules_and_runs_the_alert_unit_tests() {
    let config = deploy("prometheus/prometheus.yml");
    let rules = deploy("prometheus/alerts.yml");
    let tests = deploy("prometheus/alerts.test.yml");
    for (args, what) in [
        (
            vec!["check", "config", config.to_str().unwrap()],
            "check config",
        ),
        (
            vec!["check", "rules", rules.to_str().unwrap()],
            "check rules",
        ),
        (vec!["test", "rules", tests.to_str().unwrap()], "test rules"),
    ] {
        let output = common::run_program("promtool", "prometheus", &args, TOOL_TIMEOUT).await;
        assert_success(&output, &format!("promtool {what}"));
        println!("promtool {what}: {}", text(&output.stdout).trim());
    }

    // Every alert has a unit test where it fires and one where it stays quiet.
    let unit_tests = yaml("prometheus/alerts.test.yml");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in seq(&unit_tests["tests"], "alerts.test.yml tests") {
        for case in seq(&test["alert_rule_test"], "alert_rule_test") {
            let name = scalar(&case["alertname"], "alertname");
            if seq(&case["exp_alerts"], "exp_alerts").is_empty() {
                quiet.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    for (name, _) in alert_rules() {
        assert!(fires.contains(&name), "no unit test where {name} fires");
        assert!(
            quiet.contains(&name),
            "no unit test where {name} stays quiet"
        );
    }

    // The alerts select the job the scrape config defines (and the ServiceMonitor's Service).
    let config = yaml("prometheus/prometheus.yml");
    let job = scalar(&config["scrape_configs"][0]["job_name"], "job_name");
    let (_, target_down) = alert_rules()
        .into_iter()
        .find(|(_, expr)| expr.contains("up{"))
        .expect("an alert on up{...}");
    assert!(
        target_down.contains(&format!("job=\"{job}\"")),
        "{target_down:?} does not select job {job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_use_only_metrics_a_real_hub_exports() {
    let (_redis, hub) = redis_hub("metric-names").await;
    let (families, series) = exposed_series(hub.addr).await;
    assert!(
        series.contains("ssehub_redis_up"),
        "a Redis-mode hub exports ssehub_redis_up: {series:?}"
    );

    for (name, expr) in alert_rules() {
        let used = promql_metrics(&expr);
        let unknown: Vec<_> = used.difference(&series).collect();
        assert!(unknown.is_empty(), "alert {name} uses unknown {unknown:?}");
    }

    let DashboardQueries { targets, variables } = dashboard_queries();
    let mut dashboard_series = BTreeSet::new();
    for (title, expr) in &targets {
        let used = promql_metrics(expr);
        let unknown: Vec<_> = used.difference(&series).collect();
        assert!(
            unknown.is_empty(),
            "panel {title:?} uses unknown {unknown:?}"
        );
        dashboard_series.extend(used);
    }
    for (selector, _) in &variables {
        let unknown: Vec<_> = promql_metrics(selector)
            .difference(&series)
            .cloned()
            .collect();
        assert!(
            unknown.is_empty(),
            "dashboard variable uses unknown {unknown:?}"
        );
    }
    // And the dashboard shows every family the hub exports.
    for family in &families {
        let shown = dashboard_series.iter().any(|s| {
            s == family
                || s.strip_prefix(family.as_str())
                    .is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest))
        });
        assert!(shown, "the dashboard has no panel for {family}");
    }
    println!(
        "{} families exported, {} dashboard queries, {} alerts: all names exist",
        families.len(),
        targets.len(),
        alert_rules().len()
    );
}

/// A Prometheus process on a free loopback port with its data in a temp dir.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with deploy/prometheus/prometheus.yml rewritten to scrape `target`
    /// every second (and evaluate alerts.yml every second), and waits until it is ready.
    async fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let mut config = yaml("prometheus/prometheus.yml");
        config["global"]["scrape_interval"] = "1s".into();
        config["global"]["evaluation_interval"] = "1s".into();
        let jobs = config["scrape_configs"]
            .as_sequence_mut()
            .expect("scrape_configs");
        assert_eq!(jobs.len(), 1, "one scrape job: ssehub");
        let mut static_config = serde_yaml::Mapping::new();
        static_config.insert(
            "targets".into(),
            vec![Yaml::from(target.to_string())].into(),
        );
        jobs[0]["static_configs"] = vec![Yaml::Mapping(static_config)].into();
        let rewritten = serde_yaml::to_string(&config).expect("serialize prometheus.yml");
        std::fs::write(dir.path().join("prometheus.yml"), rewritten).expect("write config");
        // rule_files are relative to the config file: alerts.yml beside it, unchanged.
        std::fs::copy(
            deploy("prometheus/alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .expect("copy alerts.yml");

        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let mut command = Command::new("prometheus");
        command
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log));
        let child = spawn_tool("prometheus", "Debian's prometheus", &mut command);
        let mut prometheus = Prometheus { addr, child, dir };
        prometheus
            .wait("Prometheus is ready", || async {
                tokio::net::TcpStream::connect(addr).await.is_ok()
                    && request(addr, "GET", "/-/ready", &[], b"").await.status == 200
            })
            .await;
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Polls `check` every 100 ms within [`PROMETHEUS_TIMEOUT`]; panics with `what` and the log.
    async fn wait<F, Fut>(&mut self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        while !check().await {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("prometheus exited with {status}; log:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                panic!(
                    "not within {PROMETHEUS_TIMEOUT:?}: {what}; prometheus log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET an API path and return its `data`, asserting `"status": "success"`.
    async fn api(addr: SocketAddr, path: &str) -> Json {
        let response = request(addr, "GET", path, &[], b"").await;
        let body = response.json();
        assert_eq!(body["status"], "success", "GET {path}: {body}");
        body["data"].clone()
    }

    /// The instant vector of `promql` (an API error, e.g. bad PromQL, panics).
    async fn query(addr: SocketAddr, promql: &str) -> Vec<Json> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let data = Prometheus::api(addr, &format!("/api/v1/query?{query}")).await;
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_real_hub_with_the_deploy_config_and_rules() {
    let (mut redis, hub) = redis_hub("prometheus-target").await;
    let mut prometheus = Prometheus::start(hub.addr).await;
    let prom = prometheus.addr;
    let instance = hub.addr.to_string();
    let job = scalar(
        &yaml("prometheus/prometheus.yml")["scrape_configs"][0]["job_name"],
        "job_name",
    );

    // The hub is an `up` target and its metrics are queryable, with Prometheus' labels.
    let up = format!("up{{job=\"{job}\", instance=\"{instance}\"}} == 1");
    prometheus
        .wait("the hub's target is up", || async {
            !Prometheus::query(prom, &up).await.is_empty()
        })
        .await;
    let redis_up = Prometheus::query(prom, "ssehub_redis_up").await;
    assert_eq!(redis_up.len(), 1, "{redis_up:?}");
    assert_eq!(redis_up[0]["metric"]["instance"], instance.as_str());
    assert_eq!(redis_up[0]["metric"]["job"], job.as_str());
    assert_eq!(redis_up[0]["value"][1], "1", "{redis_up:?}");

    // alerts.yml loaded and evaluated without error.
    let names: BTreeSet<String> = alert_rules().into_iter().map(|(name, _)| name).collect();
    prometheus
        .wait(
            "every rule of alerts.yml was evaluated with health ok",
            || async {
                let data = Prometheus::api(prom, "/api/v1/rules").await;
                let rules: Vec<&Json> = data["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                    .collect();
                let loaded: BTreeSet<String> = rules
                    .iter()
                    .filter_map(|r| r["name"].as_str().map(str::to_owned))
                    .collect();
                loaded == names && rules.iter().all(|r| r["health"] == "ok")
            },
        )
        .await;
    // On a healthy hub every alert expression runs and finds nothing.
    for (name, expr) in alert_rules() {
        let result = Prometheus::query(prom, &expr).await;
        assert!(
            result.is_empty(),
            "{name} matches a healthy hub: {result:?}"
        );
    }

    // Every dashboard query runs and finds the hub's series (rates once two scrapes exist).
    let DashboardQueries { targets, variables } = dashboard_queries();
    for (title, expr) in &targets {
        let promql = grafana_to_promql(expr, &job, &instance);
        prometheus
            .wait(&format!("panel {title:?} shows data: {promql}"), || async {
                !Prometheus::query(prom, &promql).await.is_empty()
            })
            .await;
    }
    for (selector, label) in &variables {
        let promql = grafana_to_promql(selector, &job, &instance);
        let result = Prometheus::query(prom, &promql).await;
        assert!(
            result
                .iter()
                .any(|s| s["metric"][label.as_str()].is_string()),
            "variable label_values({selector}, {label}) finds nothing: {result:?}"
        );
    }

    // Redis goes away: the hub says so, and the Redis-down alert's expression catches it.
    redis.kill().await;
    let (_, redis_down) = alert_rules()
        .into_iter()
        .find(|(name, _)| name == "SsehubRedisDown")
        .expect("alert SsehubRedisDown");
    prometheus
        .wait("the SsehubRedisDown expression matches the hub", || async {
            Prometheus::query(prom, &redis_down)
                .await
                .iter()
                .any(|s| s["metric"]["instance"] == instance.as_str())
        })
        .await;
    println!(
        "prometheus scraped {instance}; {} rules ok; {} dashboard queries with data; Redis-down caught",
        names.len(),
        targets.len()
    );
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `(section, key, value)` of every `Key=value` line of a unit file, in order.
fn unit_entries(path: &Path) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in read(path).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not Key=value: {line:?}", path.display()));
        entries.push((section.clone(), key.to_owned(), value.to_owned()));
    }
    entries
}

/// The last value of `key` in `[Service]` (systemd's rule for most settings).
fn service_setting(entries: &[(String, String, String)], key: &str) -> String {
    entries
        .iter()
        .rev()
        .find(|(section, k, _)| section == "Service" && k == key)
        .map(|(_, _, v)| v.clone())
        .unwrap_or_else(|| panic!("ssehub.service has no {key}="))
}

const INSTALLED_BIN: &str = "/usr/local/bin/ssehub";
const INSTALLED_CONFIG: &str = "/etc/ssehub/ssehub.toml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_starts_the_hub_with_the_example_config() {
    let unit = unit_entries(&deploy("systemd/ssehub.service"));
    let exec_start = service_setting(&unit, "ExecStart");
    let argv: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(
        argv[0], INSTALLED_BIN,
        "ExecStart runs the installed binary"
    );
    assert!(
        argv.contains(&INSTALLED_CONFIG),
        "ExecStart reads {INSTALLED_CONFIG}: {exec_start}"
    );
    // The same arguments, with the config path pointing at the example in the repository.
    let example = deploy("systemd/ssehub.toml");
    let args: Vec<&str> = argv[1..]
        .iter()
        .map(|&a| match a {
            INSTALLED_CONFIG => example.to_str().unwrap(),
            other => other,
        })
        .collect();
    let config = effective_config(&args, &[], "ssehub.service ExecStart").await;

    // A few values of the file really applied (each differs from its default).
    let file: toml::Table = toml::from_str(&read(&example)).expect("ssehub.toml is TOML");
    let string = |key: &str| {
        file[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}"))
            .to_owned()
    };
    assert_eq!(field(&config, "listen"), string("listen"));
    assert_eq!(
        field(&config, "max_connections"),
        file["max-connections"].to_string()
    );
    assert_eq!(
        field(&config, "history_bytes"),
        file["history-bytes"].to_string()
    );
    assert_eq!(
        shutdown_timeout(&config),
        duration(&string("shutdown-timeout"), "shutdown-timeout")
    );
    assert_eq!(field(&config, "log_format"), "Json");
    assert_eq!(field(&config, "demo"), "false", "no-demo = true applied");

    // Stopping waits for the drain; the open-file limit is above the connection limit.
    assert_eq!(service_setting(&unit, "KillSignal"), "SIGTERM");
    let stop = duration(&service_setting(&unit, "TimeoutStopSec"), "TimeoutStopSec");
    assert!(
        stop >= shutdown_timeout(&config) + STOP_MARGIN,
        "TimeoutStopSec {stop:?} leaves no margin over shutdown-timeout {:?}",
        shutdown_timeout(&config)
    );
    let nofile: usize = service_setting(&unit, "LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    let max_connections: usize = field(&config, "max_connections").parse().unwrap();
    assert!(
        nofile > max_connections + 100,
        "LimitNOFILE {nofile} is not above max-connections {max_connections} plus a margin"
    );
    assert!(["simple", "exec"].contains(&service_setting(&unit, "Type").as_str()));
    assert_eq!(service_setting(&unit, "Restart"), "on-failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_toml_documents_every_setting_with_valid_keys() {
    let path = deploy("systemd/ssehub.toml");
    let lines: Vec<String> = read(&path).lines().map(str::to_owned).collect();
    let assignment = |line: &str| -> Option<(String, bool)> {
        let (active, body) = match line.strip_prefix("# ") {
            Some(rest) => (false, rest),
            None => (true, line),
        };
        let (key, _) = body.split_once(" = ")?;
        key.bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
            .then(|| (key.to_owned(), active))
    };
    let mut keys = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((key, active)) = assignment(line) else {
            continue;
        };
        keys.insert(key.clone());
        // A commented-out example is a valid setting too (no typo, right type).
        if !active {
            let body = line.strip_prefix("# ").unwrap();
            if let Err(e) = toml::from_str::<ssehub::config::Settings>(body) {
                panic!("ssehub.toml line {}: {body:?} is not a setting: {e}", i + 1);
            }
        }
        // Right above each key stands a comment saying what it bounds.
        let above = if i == 0 { "" } else { lines[i - 1].as_str() };
        assert!(
            above.starts_with("# ") && assignment(above).is_none(),
            "ssehub.toml line {} ({key}) has no comment right above it",
            i + 1
        );
    }

    // Every flag of the binary (but --config itself) has its key in the example.
    let flags: BTreeSet<String> = help_text()
        .await
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| {
            flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .filter(|flag| !["config", "help", "version"].contains(&flag.as_str()))
        .filter(|flag| !flag.is_empty())
        .collect();
    assert!(flags.len() > 20, "flags from --help: {flags:?}");
    let missing: Vec<_> = flags.difference(&keys).collect();
    assert!(
        missing.is_empty(),
        "ssehub.toml does not mention {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_analyze_verifies_the_unit_and_rates_it_hardened() {
    // The unit as installed, but starting the binary built here (verify checks it exists).
    let dir = TempDir::new("systemd");
    let unit = dir.path().join("ssehub.service");
    let original = read(&deploy("systemd/ssehub.service"));
    assert!(original.contains(&format!("ExecStart={INSTALLED_BIN} ")));
    std::fs::write(
        &unit,
        original.replace(
            &format!("ExecStart={INSTALLED_BIN} "),
            &format!("ExecStart={BIN} "),
        ),
    )
    .expect("write unit");
    let unit = unit.to_str().unwrap();

    let verify = common::run_program(
        "systemd-analyze",
        "systemd",
        &["verify", unit],
        TOOL_TIMEOUT,
    )
    .await;
    assert_success(&verify, "systemd-analyze verify");
    // verify only warns (exit 0) on unknown keys and bad values: any output is a finding.
    assert!(
        verify.stderr.is_empty() && verify.stdout.is_empty(),
        "systemd-analyze verify has findings:\n{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    // Exposure 0.0 (locked down) .. 10.0 (unprotected); the threshold is in tenths: <= 2.0.
    let security = common::run_program(
        "systemd-analyze",
        "systemd",
        &[
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            unit,
        ],
        TOOL_TIMEOUT,
    )
    .await;
    let report = text(&security.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(no overall line)")
        .to_owned();
    assert!(
        security.status.success(),
        "exposure above 2.0: {overall}\n{report}{}",
        text(&security.stderr)
    );
    println!("systemd-analyze security: {overall}");
}

// ---------------------------------------------------------------------------------------------
// Docker

/// One instruction of a Dockerfile, continuation lines joined.
struct Instruction {
    stage: usize,
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut stage = 0;
    let mut pending = String::new();
    for line in read(&deploy("Dockerfile")).lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending.split_once(' ').unwrap_or((&pending, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage += 1;
        }
        instructions.push(Instruction {
            stage,
            keyword,
            args: args.trim().to_owned(),
        });
        pending.clear();
    }
    instructions
}

fn exec_form(args: &str, what: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{what} is not exec form {args:?}: {e}"))
}

/// What the runtime stage declares: (ENV pairs, EXPOSE port, USER uid, HEALTHCHECK argv,
/// ENTRYPOINT argv, the binary's path).
struct RuntimeStage {
    env: Vec<(String, String)>,
    expose: u16,
    uid: u32,
    healthcheck: Vec<String>,
    entrypoint: Vec<String>,
    binary: String,
}

fn runtime_stage() -> RuntimeStage {
    let instructions = dockerfile();
    let last = instructions.iter().map(|i| i.stage).max().expect("FROM");
    assert!(last >= 2, "a multi-stage build");
    let runtime: Vec<&Instruction> = instructions.iter().filter(|i| i.stage == last).collect();
    let one = |keyword: &str| -> &str {
        let found: Vec<_> = runtime.iter().filter(|i| i.keyword == keyword).collect();
        assert_eq!(found.len(), 1, "runtime stage: one {keyword}");
        &found[0].args
    };
    let env = runtime
        .iter()
        .filter(|i| i.keyword == "ENV")
        .flat_map(|i| i.args.split_whitespace())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV KEY=value");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let user = one("USER");
    let uid = user.split(':').next().unwrap().parse().unwrap_or_else(|_| {
        panic!("USER {user:?} is not numeric (Kubernetes' runAsNonRoot cannot verify a name)")
    });
    let healthcheck = one("HEALTHCHECK");
    let (_, command) = healthcheck
        .split_once("CMD ")
        .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {healthcheck:?}"));
    let copy = one("COPY");
    let binary = copy.split_whitespace().last().unwrap().to_owned();
    assert!(
        copy.starts_with("--from="),
        "the binary comes from the build stage: {copy}"
    );
    RuntimeStage {
        env,
        expose: one("EXPOSE").parse().expect("EXPOSE port"),
        uid,
        healthcheck: exec_form(command, "HEALTHCHECK CMD"),
        entrypoint: exec_form(one("ENTRYPOINT"), "ENTRYPOINT"),
        binary,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_runtime_is_non_root_and_its_health_check_really_probes() {
    let instructions = dockerfile();
    assert!(
        instructions.iter().any(|i| i.stage == 1
            && i.keyword == "RUN"
            && i.args.contains("cargo build --release --locked -p ssehub")),
        "the build stage runs cargo build --release --locked -p ssehub"
    );
    let stage = runtime_stage();
    assert_ne!(stage.uid, 0, "the runtime stage runs as root");
    assert_eq!(stage.entrypoint, std::slice::from_ref(&stage.binary));
    assert_eq!(stage.healthcheck, [stage.binary.as_str(), "health"]);

    // The image's environment is a valid setup listening on the exposed port.
    let env: Vec<(&str, &str)> = stage
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_known_env(&env, "Dockerfile ENV").await;
    let config = effective_config(&[], &env, "Dockerfile ENV").await;
    assert_eq!(
        listen_port(&config),
        stage.expose,
        "EXPOSE = SSEHUB_LISTEN's port"
    );
    assert!(
        field(&config, "listen").starts_with("0.0.0.0:"),
        "inside a container the hub listens on every interface"
    );

    // The health check command, as the container runs it: the address comes from SSEHUB_LISTEN
    // (0.0.0.0, probed on loopback). Exit 0 against a serving hub...
    let hub = Server::start("docker-health", &[], &[], false).await;
    let listen = format!("0.0.0.0:{}", hub.addr.port());
    let args: Vec<&str> = stage.healthcheck[1..].iter().map(String::as_str).collect();
    let healthy = run(&args, &[("SSEHUB_LISTEN", &listen)]).await;
    assert_success(&healthy, "health check against a serving hub");
    // ...and not against a closed port.
    let closed = format!("0.0.0.0:{}", free_port());
    let sick = run(&args, &[("SSEHUB_LISTEN", &closed)]).await;
    assert!(
        !sick.status.success(),
        "health check passed against the closed {closed}: {}",
        text(&sick.stderr)
    );
    assert!(
        text(&sick.stderr).contains("ssehub health"),
        "{}",
        text(&sick.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_build_context_keeps_the_locked_workspace() {
    assert!(
        dockerfile()
            .iter()
            .any(|i| i.stage == 1 && i.keyword == "COPY" && i.args == ". ."),
        "the build stage copies the whole context (what this test rebuilds)"
    );
    let ignored: Vec<String> = read(&deploy("Dockerfile.dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for pattern in &ignored {
        assert!(
            !pattern.contains(['*', '?', '[', '!', '\\']) && !pattern.starts_with('/'),
            "{pattern:?}: keep the ignore file to plain paths (this test matches them as prefixes)"
        );
    }
    for heavy in ["target", ".git", "fuzz"] {
        assert!(ignored.iter().any(|p| p == heavy), "{heavy} is not ignored");
    }

    // The context as BuildKit would send it, and cargo resolving it offline with the lock file.
    let context = TempDir::new("docker-context");
    fn copy(from: &Path, to: &Path, rel: &str, ignored: &[String]) {
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if ignored.contains(&path) {
                continue;
            }
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                std::fs::create_dir_all(to.join(&path)).expect("mkdir");
                copy(&entry.path(), to, &path, ignored);
            } else if kind.is_file() {
                std::fs::copy(entry.path(), to.join(&path)).expect("copy");
            }
        }
    }
    copy(&repo(), context.path(), "", &ignored);
    let manifest = context.path().join("Cargo.toml");
    let output = common::run_program(
        env!("CARGO"),
        "the Rust toolchain",
        &[
            "metadata",
            "--locked",
            "--offline",
            "--format-version=1",
            "--manifest-path",
            manifest.to_str().unwrap(),
        ],
        TOOL_TIMEOUT,
    )
    .await;
    assert_success(
        &output,
        "cargo metadata --locked on the Docker build context",
    );
    let metadata: Json = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let members = metadata["workspace_members"].as_array().expect("members");
    assert!(
        members
            .iter()
            .any(|m| m.as_str().is_some_and(|m| m.contains("ssehub@"))),
        "ssehub is a workspace member of the context: {members:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_file_wires_redis_nodes_nginx_and_prometheus() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let service_names: BTreeSet<String> =
        services.keys().map(|k| scalar(k, "service name")).collect();
    let hubs: Vec<String> = service_names
        .iter()
        .filter(|n| n.starts_with("ssehub-"))
        .cloned()
        .collect();
    assert_eq!(hubs.len(), 3, "three hub nodes: {hubs:?}");
    let stage = runtime_stage();

    let mut hub_ports = BTreeSet::new();
    for name in &hubs {
        let hub = &compose["services"][name.as_str()];
        // The image built from deploy/Dockerfile with the repository as context.
        let context = deploy("").join(scalar(&hub["build"]["context"], "build.context"));
        let dockerfile = context.join(scalar(&hub["build"]["dockerfile"], "build.dockerfile"));
        assert_eq!(
            dockerfile
                .canonicalize()
                .expect("the compose Dockerfile exists"),
            deploy("Dockerfile").canonicalize().unwrap()
        );
        // Its environment is accepted by the binary, and makes it a Redis node.
        let env: Vec<(String, String)> = hub["environment"]
            .as_mapping()
            .expect("environment as a mapping")
            .iter()
            .map(|(k, v)| (scalar(k, "env name"), scalar(v, "env value")))
            .collect();
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_known_env(&env_refs, name).await;
        let config = effective_config(&[], &env_refs, name).await;
        let redis_url = field(&config, "redis_url");
        let host = redis_url
            .strip_prefix("Some(\"redis://")
            .unwrap_or_else(|| panic!("{name}: no redis:// URL: {redis_url}"))
            .split([':', '/', '"'])
            .next()
            .unwrap_or_default();
        assert!(
            service_names.contains(host),
            "{name}: Redis host {host:?} ({redis_url}) is not a compose service"
        );
        hub_ports.insert(listen_port(&config));
        // Stopping drains before the SIGKILL.
        let grace = duration(
            &scalar(&hub["stop_grace_period"], "stop_grace_period"),
            name,
        );
        assert!(
            grace >= shutdown_timeout(&config) + STOP_MARGIN,
            "{name}: stop_grace_period"
        );
        // Health check = the image's, and Redis healthy first.
        let test: Vec<String> = seq(&hub["healthcheck"]["test"], "healthcheck.test")
            .iter()
            .map(|v| scalar(v, "test"))
            .collect();
        assert_eq!(test[0], "CMD");
        assert_eq!(test[1..], stage.healthcheck[..], "{name}: healthcheck");
        assert_eq!(
            hub["depends_on"][host]["condition"].as_str(),
            Some("service_healthy"),
            "{name} waits for a healthy Redis"
        );
    }
    assert_eq!(hub_ports.len(), 1, "every node listens on the same port");
    let port = *hub_ports.first().unwrap();

    // Redis: persistent (channels keep their epochs across restarts) and health-checked.
    let redis = &compose["services"]["redis"];
    let command: Vec<String> = seq(&redis["command"], "redis command")
        .iter()
        .map(|v| scalar(v, "arg"))
        .collect();
    assert!(
        command.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "redis appendonly: {command:?}"
    );
    assert!(
        redis["healthcheck"]["test"].is_sequence(),
        "redis has a health check"
    );

    // Every bind-mounted file exists in the repository.
    let mut mounts = BTreeMap::new();
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = scalar(volume, "volume");
            let (source, rest) = spec.split_once(':').expect("source:target");
            if source.starts_with('.') {
                let target = rest.split(':').next().unwrap().to_owned();
                assert!(
                    deploy(source).exists(),
                    "{}: mounts missing {source}",
                    scalar(name, "service")
                );
                mounts.insert(target, deploy(source));
            }
        }
    }

    // nginx serves the shared proxy config, whose upstream lists every node.
    let nginx_conf = mounts
        .get("/etc/nginx/conf.d/default.conf")
        .expect("nginx mounts deploy/nginx/ssehub.conf as default.conf");
    let nginx_text = read(nginx_conf);
    for name in &hubs {
        assert!(
            nginx_text.contains(&format!("server {name}:{port}")),
            "{} has no upstream server {name}:{port}",
            nginx_conf.display()
        );
    }

    // Prometheus runs the deploy config and rules, scraping exactly the nodes.
    let prometheus_config = mounts
        .get("/etc/prometheus/prometheus.yml")
        .expect("prometheus.yml mounted");
    assert_eq!(prometheus_config, &deploy("./prometheus/prometheus.yml"));
    assert!(
        mounts.contains_key("/etc/prometheus/alerts.yml"),
        "alerts.yml mounted"
    );
    let scrape = yaml("prometheus/prometheus.yml");
    let targets: BTreeSet<String> = seq(
        &scrape["scrape_configs"][0]["static_configs"][0]["targets"],
        "targets",
    )
    .iter()
    .map(|t| scalar(t, "target"))
    .collect();
    let expected: BTreeSet<String> = hubs.iter().map(|n| format!("{n}:{port}")).collect();
    assert_eq!(
        targets, expected,
        "prometheus.yml scrapes the compose nodes"
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// Every manifest of deploy/k8s by kind (one document per file).
fn k8s_manifests() -> BTreeMap<String, Yaml> {
    let kustomization = yaml("k8s/kustomization.yaml");
    let listed: BTreeSet<String> = seq(&kustomization["resources"], "resources")
        .iter()
        .map(|r| scalar(r, "resource"))
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(deploy("k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest");
    listed
        .iter()
        .map(|file| {
            let doc = yaml(&format!("k8s/{file}"));
            (scalar(&doc["kind"], file), doc)
        })
        .collect()
}

/// Whether every `key: value` of `selector` is in `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let selector = selector.as_mapping().expect("selector mapping");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifests_agree_with_each_other_and_the_binary() {
    let manifests = k8s_manifests();
    let kind = |k: &str| {
        manifests
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in deploy/k8s"))
    };
    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let containers = seq(&pod["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // The container's settings are accepted by the binary.
    let mut env = Vec::new();
    for var in seq(&container["env"], "env") {
        let name = scalar(&var["name"], "env name");
        let value = var["value"].as_str().unwrap_or_else(|| {
            panic!("env {name} has no literal value: this test cannot check it")
        });
        env.push((name, value.to_owned()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args: Vec<String> = container["args"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|a| scalar(a, "arg"))
        .collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_known_env(&env_refs, "Deployment env").await;
    let config = effective_config(&arg_refs, &env_refs, "Deployment env").await;
    assert!(
        field(&config, "redis_url").starts_with("Some("),
        "pods share Redis"
    );

    // The port the hub listens on is the container's `http` port, which both probes use.
    let port = listen_port(&config);
    let ports = seq(&container["ports"], "ports");
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    assert_eq!(http["containerPort"].as_u64(), Some(u64::from(port)));
    let resolves = |probe_port: &Yaml| {
        probe_port.as_str() == Some("http") || probe_port.as_u64() == Some(u64::from(port))
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert!(resolves(&get["port"]), "{probe} port {:?}", get["port"]);
    }

    // SIGKILL comes after the preStop pause plus the whole drain deadline, with a margin.
    let grace = Duration::from_secs(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds"),
    );
    let pre_stop = Duration::from_secs(
        container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0),
    );
    assert!(
        grace >= pre_stop + shutdown_timeout(&config) + STOP_MARGIN,
        "grace {grace:?} < preStop {pre_stop:?} + shutdown-timeout {:?} + {STOP_MARGIN:?}",
        shutdown_timeout(&config)
    );

    // Resources (the HPA's CPU utilization is relative to the request) and a non-root user
    // matching the image's.
    for (bound, resource) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "cpu"),
        ("limits", "memory"),
    ] {
        assert!(
            container["resources"][bound][resource].is_string(),
            "resources.{bound}.{resource} is not set"
        );
    }
    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        security["runAsUser"].as_u64(),
        Some(u64::from(runtime_stage().uid)),
        "runAsUser is the image's USER"
    );

    // The Service reaches the pods' http port, without session affinity.
    let service = kind("Service");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    assert_ne!(
        service["spec"]["sessionAffinity"].as_str(),
        Some("ClientIP")
    );
    let service_ports = seq(&service["spec"]["ports"], "service ports");
    assert!(service_ports.iter().all(|p| resolves(&p["targetPort"])));

    // The ServiceMonitor selects the Service (not the pods) and scrapes its http port; its job
    // label (the Service name) is the job the alerts expect.
    let monitor = kind("ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    for endpoint in seq(&monitor["spec"]["endpoints"], "endpoints") {
        assert!(service_ports.iter().any(|p| p["name"] == endpoint["port"]));
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    }
    let job = &yaml("prometheus/prometheus.yml")["scrape_configs"][0]["job_name"];
    assert_eq!(
        &service["metadata"]["name"], job,
        "Service name = the alerts' job"
    );

    // The PDB guards these pods; the HPA scales this Deployment on CPU and keeps more pods than
    // the PDB lets go at once.
    let pdb = kind("PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    let hpa = kind("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    assert_eq!(target["name"], deployment["metadata"]["name"]);
    assert!(seq(&hpa["spec"]["metrics"], "hpa metrics")
        .iter()
        .any(|m| m["resource"]["name"] == "cpu"));
    let min_replicas = hpa["spec"]["minReplicas"].as_u64().expect("minReplicas");
    let max_unavailable = pdb["spec"]["maxUnavailable"].as_u64().unwrap_or(1);
    assert!(
        min_replicas > max_unavailable,
        "a disruption leaves pods serving"
    );
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "replicas belongs to the HPA (kubectl apply would reset it)"
    );
}
