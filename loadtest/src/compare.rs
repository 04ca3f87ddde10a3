//! `loadtest compare`: several result JSON files side by side, grouped by
//! workload (scenario and parameters), one row per run (its label): throughput, latency per kind,
//! errors, server memory and CPU, generator CPU. As Markdown, and as an
//! HTML page with bar charts.

use anyhow::Context as _;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{BarChart, PALETTE, escape, format_number};
use crate::html::{page_end, page_start};

/// Reads result files written by `loadtest --out` (or its stdout).
pub fn load(paths: &[impl AsRef<Path>]) -> anyhow::Result<Vec<Value>> {
    paths
        .iter()
        .map(|p| {
            let p = p.as_ref();
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let v: Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            anyhow::ensure!(
                v["scenario"].is_string(),
                "{} is not a loadtest result",
                p.display()
            );
            Ok(v)
        })
        .collect()
}

/// One workload's runs (scenario and parameters), in the order given.
struct Group<'a> {
    scenario: String,
    parameters: String,
    runs: Vec<(String, &'a Value)>,
}

fn groups(reports: &[Value]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for report in reports {
        // Runs compare when they ran the same scenario with the same
        // parameters (the same workload).
        let scenario = report["scenario"].as_str().unwrap_or("?").to_owned();
        let parameters = report["parameters"].to_string();
        let index = match groups
            .iter()
            .position(|g| g.scenario == scenario && g.parameters == parameters)
        {
            Some(i) => i,
            None => {
                groups.push(Group {
                    scenario,
                    parameters,
                    runs: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[index];
        let base = report["label"].as_str().unwrap_or("").to_owned();
        // Two runs with one label (say, repeated runs) stay apart.
        let taken = group
            .runs
            .iter()
            .filter(|(l, _)| l == &base || l.starts_with(&format!("{base} #")))
            .count();
        let label = if taken == 0 {
            base
        } else {
            format!("{base} #{}", taken + 1)
        };
        group.runs.push((label, report));
    }
    groups
}

/// Kinds in the order they first appear across the runs.
fn kinds(group: &Group<'_>) -> Vec<String> {
    let mut kinds: Vec<String> = Vec::new();
    for (_, r) in &group.runs {
        for k in r["latency"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !kinds.contains(k) {
                kinds.push(k.clone());
            }
        }
    }
    kinds
}

fn f(v: &Value) -> String {
    v.as_f64().map_or_else(|| "–".to_owned(), format_number)
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The headline columns: title and where the value is in a report.
const HEADLINE: [(&str, &[&str]); 8] = [
    ("events/s", &["events_per_s"]),
    ("requests/s", &["requests_per_s"]),
    ("errors", &["errors_total"]),
    ("elapsed s", &["elapsed_s"]),
    ("server RSS max MB", &["resources", "server", "rss_mb_max"]),
    (
        "server RSS mean MB",
        &["resources", "server", "rss_mb_mean"],
    ),
    (
        "server CPU mean %",
        &["resources", "server", "cpu_percent_mean"],
    ),
    ("generator CPU %", &["resources", "generator_cpu_percent"]),
];

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

/// The comparison as Markdown.
pub fn markdown(reports: &[Value]) -> String {
    let mut out = String::from("# loadtest comparison\n");
    for group in groups(reports) {
        let _ = write!(
            out,
            "\n## {} `{}`\n\n| label | parameters |",
            md_cell(&group.scenario),
            md_cell(&group.parameters)
        );
        for (title, _) in HEADLINE {
            let _ = write!(out, " {title} |");
        }
        out.push_str("\n|---|---|");
        out.push_str(&"--:|".repeat(HEADLINE.len()));
        out.push('\n');
        for (label, r) in &group.runs {
            let _ = write!(
                out,
                "| {} | `{}` |",
                md_cell(label),
                md_cell(&r["parameters"].to_string())
            );
            for (_, path) in HEADLINE {
                let _ = write!(out, " {} |", f(at(r, path)));
            }
            out.push('\n');
        }
        out.push_str("\n| kind | label | count | p50 ms | p90 ms | p99 ms | max ms | errors |\n|---|---|--:|--:|--:|--:|--:|--:|\n");
        for kind in kinds(&group) {
            for (label, r) in &group.runs {
                let l = &r["latency"][&kind];
                if l.is_null() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    md_cell(&kind),
                    md_cell(label),
                    f(&l["count"]),
                    f(&l["p50_ms"]),
                    f(&l["p90_ms"]),
                    f(&l["p99_ms"]),
                    f(&l["max_ms"]),
                    f(&l["errors"]),
                );
            }
        }
        let errors: Vec<String> = group
            .runs
            .iter()
            .flat_map(|(label, r)| {
                r["errors"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .flat_map(move |(kind, codes)| {
                        codes
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(move |(code, n)| {
                                format!(
                                    "| {} | {} | {} | {} |",
                                    md_cell(label),
                                    md_cell(kind),
                                    md_cell(code),
                                    f(n)
                                )
                            })
                    })
            })
            .collect();
        if !errors.is_empty() {
            out.push_str("\n| label | kind | error | count |\n|---|---|---|--:|\n");
            for line in errors {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// The comparison as one self-contained HTML page with bar charts.
pub fn html(reports: &[Value]) -> String {
    let mut out = page_start("loadtest comparison");
    for group in groups(reports) {
        let _ = write!(
            out,
            "<h2>{} <code>{}</code></h2><table><tr><th>label</th><th>parameters</th>",
            escape(&group.scenario),
            escape(&group.parameters)
        );
        for (title, _) in HEADLINE {
            let _ = write!(out, "<th>{}</th>", escape(title));
        }
        out.push_str("</tr>");
        for (label, r) in &group.runs {
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td>",
                escape(label),
                escape(&r["parameters"].to_string())
            );
            for (_, path) in HEADLINE {
                let _ = write!(out, "<td>{}</td>", escape(&f(at(r, path))));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
        let labels: Vec<String> = group.runs.iter().map(|(l, _)| l.clone()).collect();
        let values = |path: &[&str]| -> Vec<f64> {
            group
                .runs
                .iter()
                .map(|(_, r)| at(r, path).as_f64().unwrap_or(f64::NAN))
                .collect()
        };
        let chart = |title: &str, y_label: &str, series: Vec<(String, &'static str, Vec<f64>)>| {
            BarChart {
                title: format!("{}: {title}", group.scenario),
                x_label: "run".to_owned(),
                y_label: y_label.to_owned(),
                categories: labels.clone(),
                series,
            }
            .to_svg()
        };
        out.push_str(&chart(
            "throughput",
            "per second",
            vec![
                ("events/s".to_owned(), PALETTE[0], values(&["events_per_s"])),
                (
                    "requests/s".to_owned(),
                    PALETTE[2],
                    values(&["requests_per_s"]),
                ),
            ],
        ));
        for kind in kinds(&group) {
            let series = ["p50_ms", "p90_ms", "p99_ms"]
                .iter()
                .zip([PALETTE[0], PALETTE[3], PALETTE[1]])
                .map(|(p, color)| {
                    (
                        p.trim_end_matches("_ms").to_owned(),
                        color,
                        values(&["latency", &kind, p]),
                    )
                })
                .collect();
            out.push_str(&chart(&format!("{kind} latency"), "ms", series));
        }
        let has_server = group
            .runs
            .iter()
            .any(|(_, r)| r["resources"]["server"].is_object());
        if has_server {
            out.push_str(&chart(
                "server memory",
                "MB",
                vec![
                    (
                        "RSS max".to_owned(),
                        PALETTE[4],
                        values(&["resources", "server", "rss_mb_max"]),
                    ),
                    (
                        "RSS mean".to_owned(),
                        PALETTE[5],
                        values(&["resources", "server", "rss_mb_mean"]),
                    ),
                ],
            ));
        }
        let mut cpu = vec![(
            "generator".to_owned(),
            PALETTE[7],
            values(&["resources", "generator_cpu_percent"]),
        )];
        if has_server {
            cpu.insert(
                0,
                (
                    "server".to_owned(),
                    PALETTE[1],
                    values(&["resources", "server", "cpu_percent_mean"]),
                ),
            );
        }
        out.push_str(&chart("CPU (mean)", "% of one core", cpu));
    }
    out.push_str(page_end());
    out
}
