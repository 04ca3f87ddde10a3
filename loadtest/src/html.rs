//! The HTML report of one run, rendered from its JSON (so a saved result
//! can be rendered again): one self-contained file with a headline table,
//! and per request kind a latency-over-time chart and a latency histogram,
//! then server memory and CPU over time.

use serde_json::Value;
use std::fmt::Write as _;

use crate::charts::{BarChart, PALETTE, Series, XyChart, escape, format_number};

/// Dots drawn per latency-over-time chart; the kept samples are thinned
/// evenly beyond it to keep the file small.
const SCATTER_DOTS_MAX: usize = 4_000;
/// Time buckets for the p50/p99 lines, at most.
const TIME_BUCKETS_MAX: u64 = 100;
/// Narrowest time bucket for the p50/p99 lines, in ms.
const TIME_BUCKET_MS_MIN: u64 = 100;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:800px;color:#111;padding:0 12px}\
h1{font-size:22px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}\
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}\
th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}.bad{color:#b91c1c;font-weight:600}\
.muted{color:#666;font-size:12px}svg{display:block;margin:8px 0;max-width:100%;height:auto}";

/// Opens a page: doctype, title, inline style.
pub fn page_start(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(title)
    )
}

pub fn page_end() -> &'static str {
    "</body></html>\n"
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => format_number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Null => "–".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn row(out: &mut String, key: &str, value: &str) {
    let _ = write!(
        out,
        "<tr><td>{}</td><td>{}</td></tr>",
        escape(key),
        escape(value)
    );
}

/// The HTML report of one run's JSON.
pub fn render_run(report: &Value) -> String {
    let label = report["label"].as_str().unwrap_or("");
    let scenario = report["scenario"].as_str().unwrap_or("");
    let mut out = page_start(&format!("loadtest {scenario}: {label}"));

    out.push_str("<table>");
    row(&mut out, "server (label)", label);
    row(&mut out, "scenario", scenario);
    row(&mut out, "parameters", &report["parameters"].to_string());
    row(&mut out, "measured phase (s)", &num(&report["elapsed_s"]));
    row(&mut out, "events", &num(&report["events"]));
    row(&mut out, "events/s", &num(&report["events_per_s"]));
    row(&mut out, "requests", &num(&report["requests"]));
    row(&mut out, "requests/s", &num(&report["requests_per_s"]));
    row(&mut out, "errors", &num(&report["errors_total"]));
    let resources = &report["resources"];
    row(
        &mut out,
        "generator CPU (% of a core)",
        &num(&resources["generator_cpu_percent"]),
    );
    let server = &resources["server"];
    if server.is_object() {
        row(&mut out, "server RSS max (MB)", &num(&server["rss_mb_max"]));
        row(
            &mut out,
            "server RSS mean (MB)",
            &num(&server["rss_mb_mean"]),
        );
        row(
            &mut out,
            "server CPU mean (% of a core)",
            &num(&server["cpu_percent_mean"]),
        );
    }
    if let Some(figures) = report["figures"].as_object() {
        for (k, v) in figures {
            row(&mut out, k, &num(v));
        }
    }
    out.push_str("</table>\n");

    let kinds = report["latency"].as_object().cloned().unwrap_or_default();
    out.push_str("<h2>Latency by kind (ms)</h2><table><tr><th>kind</th><th>count</th><th>errors</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>mean</th></tr>");
    for (kind, l) in &kinds {
        let errors = l["errors"].as_u64().unwrap_or(0);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td{}>{errors}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(kind),
            num(&l["count"]),
            if errors > 0 { " class=\"bad\"" } else { "" },
            num(&l["p50_ms"]),
            num(&l["p90_ms"]),
            num(&l["p99_ms"]),
            num(&l["max_ms"]),
            num(&l["mean_ms"]),
        );
    }
    out.push_str("</table>\n");
    errors_table(&mut out, &report["errors"]);

    for (i, (kind, l)) in kinds.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(out, "<h2>{}</h2>", escape(kind));
        let samples = report["samples"][kind]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if samples.is_empty() {
            out.push_str("<p class=\"muted\">No successful samples.</p>");
            continue;
        }
        out.push_str(&latency_over_time(kind, color, &samples));
        out.push_str(&histogram(kind, color, &l["histogram"]));
    }

    if let Some(series) = server["series"].as_array().filter(|s| !s.is_empty()) {
        out.push_str("<h2>Server resources</h2>");
        let points = |col: usize| -> Vec<(f64, f64)> {
            // The first sample has no preceding interval, so no CPU figure.
            series
                .iter()
                .skip(usize::from(col == 2))
                .map(|s| {
                    (
                        s[0].as_f64().unwrap_or(0.0) / 1000.0,
                        s[col].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        };
        for (title, y_label, col, color) in [
            ("Server memory (RSS)", "MB", 1, PALETTE[0]),
            ("Server CPU", "% of one core", 2, PALETTE[1]),
        ] {
            let chart = XyChart {
                title: title.to_owned(),
                x_label: "time since start (s)".to_owned(),
                y_label: y_label.to_owned(),
                log_y: false,
                series: vec![Series {
                    name: y_label.to_owned(),
                    color,
                    points: points(col),
                    dots: false,
                }],
            };
            out.push_str(&chart.to_svg());
        }
    }
    out.push_str(page_end());
    out
}

fn errors_table(out: &mut String, errors: &Value) {
    let Some(errors) = errors.as_object() else {
        return;
    };
    let rows: Vec<(String, String, u64)> = errors
        .iter()
        .flat_map(|(kind, codes)| {
            codes
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(code, n)| (kind.clone(), code.clone(), n.as_u64().unwrap_or(0)))
        })
        .collect();
    if rows.is_empty() {
        out.push_str("<p>No errors.</p>\n");
        return;
    }
    out.push_str("<h2>Errors</h2><table><tr><th>kind</th><th>error</th><th>count</th></tr>");
    for (kind, code, n) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"bad\">{n}</td></tr>",
            escape(&kind),
            escape(&code)
        );
    }
    out.push_str("</table>\n");
}

/// Dots for (a thinned set of) the samples, and p50/p99 lines per time
/// bucket; log latency axis.
fn latency_over_time(kind: &str, color: &'static str, samples: &[Value]) -> String {
    let points: Vec<(u64, u64)> = samples
        .iter()
        .filter_map(|s| Some((s[0].as_u64()?, s[1].as_u64()?)))
        .collect();
    let span_ms = points.iter().map(|p| p.0).max().unwrap_or(0) + 1;
    let bucket_ms = span_ms.div_ceil(TIME_BUCKETS_MAX).max(TIME_BUCKET_MS_MIN);
    let mut buckets: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for &(offset, latency) in &points {
        buckets.entry(offset / bucket_ms).or_default().push(latency);
    }
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for (b, mut v) in buckets {
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        let t = (b * bucket_ms + bucket_ms / 2) as f64 / 1000.0;
        p50.push((t, at(0.5)));
        p99.push((t, at(0.99)));
    }
    let step = points.len().div_ceil(SCATTER_DOTS_MAX).max(1);
    let dots = points
        .iter()
        .step_by(step)
        .map(|&(o, l)| (o as f64 / 1000.0, l as f64 / 1000.0))
        .collect();
    XyChart {
        title: format!("{kind}: latency over time"),
        x_label: format!("time since start (s); lines per {} ms", bucket_ms),
        y_label: "latency (ms, log)".to_owned(),
        log_y: true,
        series: vec![
            Series {
                name: "request".to_owned(),
                color,
                points: dots,
                dots: true,
            },
            Series {
                name: "p50".to_owned(),
                color: "#111827",
                points: p50,
                dots: false,
            },
            Series {
                name: "p99".to_owned(),
                color: "#dc2626",
                points: p99,
                dots: false,
            },
        ],
    }
    .to_svg()
}

/// Bars per log-scale bucket of the exact histogram.
fn histogram(kind: &str, color: &'static str, buckets: &Value) -> String {
    let buckets = buckets.as_array().cloned().unwrap_or_default();
    let categories = buckets
        .iter()
        .map(|b| match b[0].as_f64() {
            Some(le) => format!("≤{}", format_number(le)),
            None => ">100000".to_owned(),
        })
        .collect();
    let counts = buckets
        .iter()
        .map(|b| b[1].as_f64().unwrap_or(0.0))
        .collect();
    BarChart {
        title: format!("{kind}: latency histogram"),
        x_label: "latency bucket (ms, log scale)".to_owned(),
        y_label: "requests".to_owned(),
        categories,
        series: vec![("count".to_owned(), color, counts)],
    }
    .to_svg()
}
