//! The side-by-side report: JSON reports of the same cases on several servers become one
//! Markdown table (with the exact commands and the machine) and one SVG chart of latency
//! percentiles and server CPU per delivery.
//!
//! Input files are named `<case>__<label>.json`; reports with the same case are compared.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::report::{Machine, Report};

/// Options of the `report` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Name of the result: writes `<out-dir>/<name>.md` and `<out-dir>/<name>.svg`.
    #[arg(long)]
    pub name: String,
    /// Where to write.
    #[arg(long, default_value = "loadtest/results")]
    pub out_dir: PathBuf,
    /// A file with the exact commands that produced the reports, quoted in the Markdown.
    #[arg(long)]
    pub commands: Option<PathBuf>,
    /// Free text put under the title (for example what was reduced).
    #[arg(long, default_value = "")]
    pub note: String,
    /// JSON reports named `<case>__<label>.json`.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

/// One compared case: its reports in the order given.
struct Case {
    name: String,
    reports: Vec<Report>,
}

fn load(paths: &[PathBuf]) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    for path in paths {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: not a report file name", path.display()))?;
        let case = stem.split("__").next().unwrap_or(stem).to_string();
        let report = Report::read_json(path)?;
        match cases.iter_mut().find(|c| c.name == case) {
            Some(existing) => existing.reports.push(report),
            None => cases.push(Case {
                name: case,
                reports: vec![report],
            }),
        }
    }
    Ok(cases)
}

/// Writes the Markdown and the SVG.
pub fn write(args: &ReportArgs) -> Result<(), String> {
    let cases = load(&args.reports)?;
    fs::create_dir_all(&args.out_dir)
        .map_err(|err| format!("{}: {err}", args.out_dir.display()))?;
    let svg = args.out_dir.join(format!("{}.svg", args.name));
    chart(&cases, &svg)?;
    let commands = match &args.commands {
        Some(path) => {
            fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?
        }
        None => String::new(),
    };
    let markdown = markdown(&args.name, &args.note, &cases, &commands, &svg);
    let md = args.out_dir.join(format!("{}.md", args.name));
    fs::write(&md, markdown).map_err(|err| format!("{}: {err}", md.display()))?;
    println!("wrote {} and {}", md.display(), svg.display());
    Ok(())
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn markdown(name: &str, note: &str, cases: &[Case], commands: &str, svg: &Path) -> String {
    let mut out = String::new();
    let machine = cases
        .iter()
        .flat_map(|c| c.reports.first())
        .map(|r| r.machine.clone())
        .next()
        .unwrap_or_else(Machine::here);
    let _ = writeln!(out, "# Load test: {name}\n");
    if !note.is_empty() {
        let _ = writeln!(out, "{note}\n");
    }
    let _ = writeln!(
        out,
        "Machine: {} cores (`nproc`), {}, Linux {}. The load tool runs on the same cores as the \
         server: its own CPU is in the last column.\n",
        machine.nproc, machine.cpu_model, machine.kernel
    );
    let _ = writeln!(
        out,
        "| case | server | subs × channels | offered | exact (lost/dup/ooo) | p50 ms | p90 ms | \
         p99 ms | p99.9 ms | max ms | deliveries/s | server CPU s | deliveries per server CPU s | \
         server CPU µs/delivery | server KiB/sub | replay done s | tool CPU cores |"
    );
    let _ = writeln!(out, "|{}", "---|".repeat(17));
    for case in cases {
        for r in &case.reports {
            let offered = match r.scenario.as_str() {
                "idle" => "idle".to_string(),
                "replay-storm" => format!(
                    "{} missed each",
                    r.replay.as_ref().map_or(0, |replay| replay.missed)
                ),
                _ => format!(
                    "{} ev/s",
                    r.publish.as_ref().map_or(0.0, |publish| publish.rate)
                ),
            };
            let c = &r.counts;
            let exact = format!(
                "{} ({}/{}/{}{})",
                if c.exact() { "yes" } else { "**no**" },
                c.lost,
                c.duplicated,
                c.out_of_order,
                if c.connect_failed + c.broken_streams + c.gaps + c.unexpected > 0 {
                    format!(
                        ", {} conn fail, {} broken, {} gaps, {} unexpected",
                        c.connect_failed, c.broken_streams, c.gaps, c.unexpected
                    )
                } else {
                    String::new()
                }
            );
            let l = &r.latency;
            let latency = if l.count > 0 {
                [l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms].map(ms)
            } else {
                [
                    "–".to_string(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                ]
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} × {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                case.name,
                r.label,
                r.subscribers,
                r.channels,
                offered,
                exact,
                latency[0],
                latency[1],
                latency[2],
                latency[3],
                latency[4],
                if r.deliveries > 0 { format!("{:.0}", r.deliveries_per_s) } else { "–".into() },
                optional(r.server.as_ref().map(|s| s.cpu_s), 2),
                optional(r.deliveries_per_server_cpu_s, 0),
                optional(r.server_cpu_us_per_delivery, 2),
                optional(r.idle.as_ref().map(|i| i.server_kib_per_subscriber), 2),
                optional(r.replay.as_ref().map(|x| x.completion_s), 3),
                r.tool.cores,
            );
        }
    }
    let _ = writeln!(
        out,
        "\nLatency is one-way, from the *scheduled* send time in each payload to arrival \
         (coordinated omission corrected). Server CPU and RSS cover all server processes \
         (nginx master and workers; for a cluster case every node and Redis). \"exact\" means \
         every subscriber got every event of its channel once and in order.\n"
    );
    per_process(&mut out, cases);
    per_node(&mut out, cases);
    let errors: Vec<String> = cases
        .iter()
        .flat_map(|c| {
            c.reports.iter().flat_map(move |r| {
                r.errors
                    .iter()
                    .map(move |e| format!("- {} / {}: {e}", c.name, r.label))
            })
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "Errors reported:\n\n{}\n", errors.join("\n"));
    }
    if let Some(file) = svg.file_name().and_then(|f| f.to_str()) {
        let _ = writeln!(out, "![latency and CPU per delivery]({file})\n");
    }
    if !commands.trim().is_empty() {
        let _ = writeln!(out, "## Commands\n\n```sh\n{}\n```", commands.trim_end());
    }
    out
}

/// CPU and RSS of each server process, for runs with several (cluster nodes and Redis, nginx
/// master and workers): the table above only has their sum.
fn per_process(out: &mut String, cases: &[Case]) {
    let rows: Vec<(&str, &Report)> = cases
        .iter()
        .flat_map(|c| c.reports.iter().map(move |r| (c.name.as_str(), r)))
        .filter(|(_, r)| r.server.as_ref().is_some_and(|s| s.processes.len() > 1))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Server CPU per process\n\nEach server process's CPU in the measurement window (its \
         share of the \"server CPU s\" column) and its RSS at the end; cores = CPU s / window.\n"
    );
    let _ = writeln!(
        out,
        "| case | server | process | pid | CPU s | cores | share | RSS KiB |\n|---|---|---|---|---|---|---|---|"
    );
    for (case, r) in rows {
        let Some(server) = &r.server else { continue };
        // Every process was measured over the same window as the total.
        let window_s = (server.cores > 0.0).then(|| server.cpu_s / server.cores);
        for p in &server.processes {
            let _ = writeln!(
                out,
                "| {case} | {} | {} | {} | {:.2} | {} | {} | {} |",
                r.label,
                p.comm,
                p.pid,
                p.cpu_s,
                optional(window_s.map(|w| p.cpu_s / w), 2),
                if server.cpu_s > 0.0 {
                    format!("{:.0} %", 100.0 * p.cpu_s / server.cpu_s)
                } else {
                    "–".into()
                },
                p.rss_kib
            );
        }
    }
    out.push('\n');
}

/// Latency per subscriber URL, for runs spread over several nodes.
fn per_node(out: &mut String, cases: &[Case]) {
    let rows: Vec<(&str, &Report)> = cases
        .iter()
        .flat_map(|c| c.reports.iter().map(move |r| (c.name.as_str(), r)))
        .filter(|(_, r)| r.per_target.len() > 1)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Latency per node\n\nThe same latency, split by the URL the subscribers read from.\n"
    );
    let _ = writeln!(
        out,
        "| case | server | subscriber URL | subs | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for (case, r) in rows {
        for t in &r.per_target {
            let l = &t.latency;
            let _ = writeln!(
                out,
                "| {case} | {} | `{}` | {} | {} | {} | {} | {} | {} |",
                r.label,
                t.url,
                t.subscribers,
                ms(l.p50_ms),
                ms(l.p90_ms),
                ms(l.p99_ms),
                ms(l.p999_ms),
                ms(l.max_ms)
            );
        }
    }
    out.push('\n');
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn color_of(labels: &[String], label: &str) -> RGBColor {
    let index = labels.iter().position(|l| l == label).unwrap_or(0);
    COLORS[index % COLORS.len()]
}

/// Latency percentile panels for every case with latency, and a bar per case and server of
/// server CPU µs per delivery.
fn chart(cases: &[Case], path: &Path) -> Result<(), String> {
    let draw = |err: DrawingAreaErrorKind<std::io::Error>| format!("chart: {err}");
    let mut labels: Vec<String> = Vec::new();
    for report in cases.iter().flat_map(|c| &c.reports) {
        if !labels.contains(&report.label) {
            labels.push(report.label.clone());
        }
    }
    let timed: Vec<&Case> = cases
        .iter()
        .filter(|c| c.reports.iter().any(|r| r.latency.count > 0))
        .collect();
    let bars: Vec<(String, String, f64)> = cases
        .iter()
        .flat_map(|c| {
            c.reports.iter().filter_map(move |r| {
                r.server_cpu_us_per_delivery
                    .map(|us| (c.name.clone(), r.label.clone(), us))
            })
        })
        .collect();
    let columns = timed.len().clamp(1, 3);
    let rows = timed.len().div_ceil(columns).max(1);
    let top_height = 300 * rows as u32;
    let bottom_height = 60 + 28 * bars.len().max(1) as u32;
    let root = SVGBackend::new(path, (1200, top_height + bottom_height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let (top, bottom) = root.split_vertically(top_height);

    let panels = top.split_evenly((rows, columns));
    const NAMES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];
    for (panel, case) in panels.iter().zip(&timed) {
        let values: Vec<f64> = case
            .reports
            .iter()
            .flat_map(|r| [r.latency.p50_ms, r.latency.max_ms])
            .filter(|v| *v > 0.0)
            .collect();
        // A log scale drawn as log10(ms) on a linear axis labelled in ms (evenly spaced labels);
        // room below the lines, and above them for the legend.
        let low = values.iter().copied().fold(f64::MAX, f64::min).max(0.001) / 1.5;
        let high = values.iter().copied().fold(0.0, f64::max).max(low * 10.0) * 4.0;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{}: latency (ms, log)", case.name),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(25)
            .y_label_area_size(55)
            .build_cartesian_2d(0i32..4i32, low.log10()..high.log10())
            .map_err(draw)?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&|x| NAMES.get(*x as usize).unwrap_or(&"").to_string())
            .y_labels(8)
            .y_label_formatter(&|y| ms(10f64.powf(*y)))
            .draw()
            .map_err(draw)?;
        for report in case.reports.iter().filter(|r| r.latency.count > 0) {
            let l = &report.latency;
            let points: Vec<(i32, f64)> = [l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms]
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i32, v.max(low).log10()))
                .collect();
            let color = color_of(&labels, &report.label);
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(draw)?
                .label(report.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(draw)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw)?;
    }

    let max_us = bars.iter().map(|b| b.2).fold(0.0, f64::max).max(0.001) * 1.45;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "server CPU µs per delivery (lower is better)",
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..max_us, 0.0..bars.len().max(1) as f64)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_labels(8)
        .draw()
        .map_err(draw)?;
    for (i, (case, label, us)) in bars.iter().enumerate() {
        let y = (bars.len() - 1 - i) as f64;
        let color = color_of(&labels, label);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.15), (*us, y + 0.85)],
                color.filled(),
            )))
            .map_err(draw)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{case} / {label}: {us:.2} µs"),
                (*us + max_us * 0.01, y + 0.7),
                ("sans-serif", 13),
            )))
            .map_err(draw)?;
    }
    root.present().map_err(draw)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Summary;

    fn report(label: &str, p50: f64, us: f64) -> Report {
        Report {
            scenario: "fanout".into(),
            label: label.into(),
            subscribers: 10,
            channels: 1,
            latency: Summary {
                count: 10,
                p50_ms: p50,
                p90_ms: p50 * 2.0,
                p99_ms: p50 * 3.0,
                p999_ms: p50 * 4.0,
                max_ms: p50 * 5.0,
                mean_ms: p50,
            },
            server_cpu_us_per_delivery: Some(us),
            ..Report::default()
        }
    }

    #[test]
    fn markdown_and_svg_from_reports() {
        let dir = std::env::temp_dir().join(format!("lt-compare-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let mut paths = Vec::new();
        for (label, p50, us) in [("ssehub", 0.4, 1.5), ("nchan", 0.6, 8.0)] {
            let path = dir.join(format!("fanout-10x1__{label}.json"));
            report(label, p50, us).write_json(&path).expect("json");
            paths.push(path);
        }
        let args = ReportArgs {
            name: "test".into(),
            out_dir: dir.clone(),
            commands: None,
            note: String::new(),
            reports: paths,
        };
        write(&args).expect("report written");
        let md = fs::read_to_string(dir.join("test.md")).expect("markdown");
        assert!(md.contains("| fanout-10x1 | ssehub |"), "{md}");
        assert!(md.contains("| fanout-10x1 | nchan |"), "{md}");
        assert!(!md.contains("Server CPU per process"), "{md}");
        let svg = fs::read_to_string(dir.join("test.svg")).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn cluster_report_lists_every_process_and_node() {
        use crate::report::{ProcessReport, ServerReport, TargetReport};
        let dir = std::env::temp_dir().join(format!("lt-cluster-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let mut cluster = report("ssehub", 0.5, 10.0);
        cluster.scenario = "cluster".into();
        let process = |pid, comm: &str, cpu_s| ProcessReport {
            pid,
            comm: comm.into(),
            cpu_s,
            rss_kib: 9000,
        };
        cluster.server = Some(ServerReport {
            cpu_s: 4.0,
            cores: 0.4,
            processes: vec![
                process(10, "redis-server", 1.0),
                process(11, "ssehub", 1.0),
                process(12, "ssehub", 1.2),
                process(13, "ssehub", 0.8),
            ],
            ..ServerReport::default()
        });
        cluster.per_target = (1..=3)
            .map(|n| TargetReport {
                url: format!("http://127.0.0.1:800{n}/events/{{channel}}"),
                subscribers: 100,
                latency: cluster.latency.clone(),
            })
            .collect();
        let path = dir.join("cluster-3nodes__ssehub.json");
        cluster.write_json(&path).expect("json");
        let args = ReportArgs {
            name: "cluster".into(),
            out_dir: dir.clone(),
            commands: None,
            note: String::new(),
            reports: vec![path],
        };
        write(&args).expect("report written");
        let md = fs::read_to_string(dir.join("cluster.md")).expect("markdown");
        assert_eq!(
            md.matches("| cluster-3nodes | ssehub | 10 × 1 |").count(),
            1,
            "{md}"
        );
        assert!(
            md.contains(
                "| cluster-3nodes | ssehub | redis-server | 10 | 1.00 | 0.10 | 25 % | 9000 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| cluster-3nodes | ssehub | ssehub | 12 | 1.20 | 0.12 | 30 % | 9000 |"),
            "{md}"
        );
        assert!(
            md.contains("| `http://127.0.0.1:8003/events/{channel}` | 100 | 0.50 |"),
            "{md}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
