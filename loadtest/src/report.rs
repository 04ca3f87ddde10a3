//! Results: per-kind latencies and errors, throughput, resources, and their
//! JSON form (the input of the HTML report and of `compare`).
//!
//! Percentiles are exact (every latency is kept as a `u64`); the per-sample
//! series for plots is a uniform reservoir of at most
//! [`SAMPLES_KEPT_MAX`] samples per kind.

use rand::Rng as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::ApiError;
use crate::resources::Resources;

/// Version of the JSON layout; bumped when a field changes meaning.
pub const SCHEMA: u32 = 2;
/// Samples kept per kind for the latency-over-time plot.
pub const SAMPLES_KEPT_MAX: usize = 50_000;
/// Histogram buckets per decade of latency.
const HISTOGRAM_BUCKETS_PER_DECADE: u32 = 5;
/// The histogram spans 10^2 µs (0.1 ms) to 10^8 µs (100 s).
const HISTOGRAM_DECADE_MIN: u32 = 2;
const HISTOGRAM_DECADE_MAX: u32 = 8;

/// Everything measured for one kind of request (or one derived latency,
/// such as sync delivery).
#[derive(Clone, Debug, Default)]
pub struct KindStats {
    /// Whether this kind is an HTTP request (counted in requests/s) rather
    /// than a derived latency such as `sync_delivery`.
    pub is_request: bool,
    /// Every successful latency, in microseconds.
    latencies_us: Vec<u64>,
    /// A uniform sample of `(offset_ms, latency_us)` for plots.
    samples: Vec<(u64, u64)>,
    /// Failures by error code.
    pub errors: BTreeMap<String, u64>,
}

impl KindStats {
    /// Successful measurements (failures are in [`Self::errors`]).
    pub fn count(&self) -> usize {
        self.latencies_us.len()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn record(&mut self, offset_ms: u64, latency_us: u64) {
        self.latencies_us.push(latency_us);
        let seen = self.latencies_us.len();
        if self.samples.len() < SAMPLES_KEPT_MAX {
            self.samples.push((offset_ms, latency_us));
        } else {
            // Reservoir sampling (algorithm R): every sample so far is kept
            // with equal probability.
            let slot = rand::thread_rng().gen_range(0..seen);
            if slot < SAMPLES_KEPT_MAX {
                self.samples[slot] = (offset_ms, latency_us);
            }
        }
    }

    fn sorted(&self) -> Vec<u64> {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        v
    }

    fn to_json(&self) -> Value {
        let sorted = self.sorted();
        let pct = |p: f64| percentile_ms(&sorted, p);
        let mean_ms = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 1000.0
        };
        json!({
            "request": self.is_request,
            "count": sorted.len(),
            "errors": self.errors_total(),
            "mean_ms": mean_ms,
            "p50_ms": pct(50.0),
            "p90_ms": pct(90.0),
            "p99_ms": pct(99.0),
            "max_ms": pct(100.0),
            "histogram": histogram(&sorted),
        })
    }
}

/// The `p`-th percentile (0–100) of sorted microseconds, in milliseconds
/// (nearest rank).
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[rank.min(sorted_us.len() - 1)] as f64 / 1000.0
}

/// Log-scale buckets, `[[upper_bound_ms, count], …]`, from the first to the
/// last non-empty bucket; the last bound is `null` for "above 100 s".
fn histogram(sorted_us: &[u64]) -> Value {
    let steps = (HISTOGRAM_DECADE_MAX - HISTOGRAM_DECADE_MIN) * HISTOGRAM_BUCKETS_PER_DECADE;
    let bounds_us: Vec<f64> = (0..=steps)
        .map(|i| {
            10f64.powf(
                f64::from(HISTOGRAM_DECADE_MIN)
                    + f64::from(i) / f64::from(HISTOGRAM_BUCKETS_PER_DECADE),
            )
        })
        .collect();
    let mut counts = vec![0u64; bounds_us.len() + 1];
    for &v in sorted_us {
        let i = bounds_us.partition_point(|&b| b < v as f64);
        counts[i] += 1;
    }
    let (Some(first), Some(last)) = (
        counts.iter().position(|&c| c > 0),
        counts.iter().rposition(|&c| c > 0),
    ) else {
        return json!([]);
    };
    (first..=last)
        .map(|i| {
            let bound = bounds_us.get(i).map(|b| json!((b / 10.0).round() / 100.0));
            json!([bound, counts[i]])
        })
        .collect()
}

/// Collects measurements from many tasks. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    kinds: Arc<Mutex<Vec<(String, KindStats)>>>,
}

impl Recorder {
    /// A recorder whose sample offsets count from `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            kinds: Arc::default(),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    fn with_kind(&self, kind: &str, is_request: bool, f: impl FnOnce(&mut KindStats)) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let index = match kinds.iter().position(|(k, _)| k == kind) {
            Some(i) => i,
            None => {
                kinds.push((kind.to_owned(), KindStats::default()));
                kinds.len() - 1
            }
        };
        let stats = &mut kinds[index].1;
        stats.is_request |= is_request;
        f(stats);
    }

    /// A latency of `kind` that began at `began` (for an open-loop request,
    /// its scheduled time) and ended now.
    pub fn success(&self, kind: &str, began: Instant) {
        self.latency(kind, true, began, began.elapsed());
    }

    /// A latency measured some other way; `is_request` says whether it
    /// counts as a request in requests/s.
    pub fn latency(&self, kind: &str, is_request: bool, began: Instant, latency: Duration) {
        let offset_ms =
            u64::try_from(began.saturating_duration_since(self.start).as_millis()).unwrap_or(0);
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.with_kind(kind, is_request, |s| s.record(offset_ms, latency_us));
    }

    /// A failed request of `kind`.
    pub fn failure(&self, kind: &str, error: &ApiError) {
        self.with_kind(kind, true, |s| {
            *s.errors.entry(error.code()).or_default() += 1;
        });
    }

    /// A failure counted under `code` that is not a failed request, such as
    /// a sync delivery that never arrived.
    pub fn failure_code(&self, kind: &str, code: &str) {
        self.with_kind(kind, false, |s| {
            *s.errors.entry(code.to_owned()).or_default() += 1;
        });
    }

    /// Records `result` as a success or failure of `kind`, begun at `began`.
    pub fn outcome<T>(&self, kind: &str, began: Instant, result: Result<T, ApiError>) -> Option<T> {
        match result {
            Ok(v) => {
                self.success(kind, began);
                Some(v)
            }
            Err(e) => {
                self.failure(kind, &e);
                None
            }
        }
    }

    /// Makes `kind` appear in the report even if nothing is recorded.
    pub fn declare(&self, kind: &str, is_request: bool) {
        self.with_kind(kind, is_request, |_| {});
    }

    /// Successful measurements of `kind` so far.
    pub fn count(&self, kind: &str) -> usize {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, s)| s.count())
    }

    /// The statistics gathered so far.
    pub fn snapshot(&self) -> Vec<(String, KindStats)> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One run's results.
pub struct Report {
    pub label: String,
    pub scenario: String,
    pub parameters: Value,
    /// The measured phase.
    pub elapsed: Duration,
    /// Events the scenario created (messages, reactions, joins, files).
    pub events: u64,
    pub kinds: Vec<(String, KindStats)>,
    /// Scenario-specific figures (target vs achieved rate, MB/s, …).
    pub figures: serde_json::Map<String, Value>,
    pub resources: Resources,
}

impl Report {
    pub fn labelled(mut self, label: &str) -> Self {
        self.label = label.to_owned();
        self
    }

    pub fn kind(&self, name: &str) -> Option<&KindStats> {
        self.kinds.iter().find(|(k, _)| k == name).map(|(_, s)| s)
    }

    /// HTTP requests of the measured phase, answered or failed, including
    /// `/sync` long-polls; derived kinds (`sync_delivery`) are not requests.
    pub fn requests(&self) -> u64 {
        self.kinds
            .iter()
            .filter(|(_, s)| s.is_request)
            .map(|(_, s)| s.count() as u64 + s.errors_total())
            .sum()
    }

    pub fn errors_total(&self) -> u64 {
        self.kinds.iter().map(|(_, s)| s.errors_total()).sum()
    }

    fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn to_json(&self) -> Value {
        let mut latency = serde_json::Map::new();
        let mut errors = serde_json::Map::new();
        let mut samples = serde_json::Map::new();
        for (kind, stats) in &self.kinds {
            latency.insert(kind.clone(), stats.to_json());
            errors.insert(kind.clone(), json!(stats.errors));
            let mut kept = stats.samples.clone();
            kept.sort_unstable();
            samples.insert(
                kind.clone(),
                kept.iter().map(|&(o, l)| json!([o, l])).collect(),
            );
        }
        json!({
            "schema": SCHEMA,
            "label": self.label,
            "scenario": self.scenario,
            "parameters": self.parameters,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events": self.events,
            "events_per_s": self.per_second(self.events),
            "requests": self.requests(),
            "requests_per_s": self.per_second(self.requests()),
            "errors_total": self.errors_total(),
            "latency": latency,
            "errors": errors,
            "figures": self.figures,
            "resources": self.resources.to_json(),
            "samples_columns": ["offset_ms", "latency_us"],
            "samples": samples,
        })
    }

    /// A few human-readable lines for stderr.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {} {}: {} events, {} requests in {:.2} s = {:.1} events/s, {:.1} requests/s, {} errors",
            self.label,
            self.scenario,
            self.parameters,
            self.events,
            self.requests(),
            self.elapsed.as_secs_f64(),
            self.per_second(self.events),
            self.per_second(self.requests()),
            self.errors_total(),
        );
        if !self.figures.is_empty() {
            s.push_str(&format!("\n  {}", Value::Object(self.figures.clone())));
        }
        for (kind, stats) in &self.kinds {
            let sorted = stats.sorted();
            s.push_str(&format!(
                "\n  {kind}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
                sorted.len(),
                percentile_ms(&sorted, 50.0),
                percentile_ms(&sorted, 90.0),
                percentile_ms(&sorted, 99.0),
                percentile_ms(&sorted, 100.0),
            ));
            if !stats.errors.is_empty() {
                s.push_str(&format!(" errors={:?}", stats.errors));
            }
        }
        let r = &self.resources;
        if let Some(cpu) = r.generator_cpu_percent {
            s.push_str(&format!("\n  generator CPU {cpu:.0} % of a core"));
        }
        if let (Some(max), Some(mean)) = (r.rss_mb_max(), r.rss_mb_mean()) {
            s.push_str(&format!(
                "\n  server RSS max {max:.1} MB mean {mean:.1} MB, CPU mean {:.0} %",
                r.cpu_percent_mean().unwrap_or(0.0)
            ));
        }
        s
    }
}

/// Serialises JSON indented like `to_string_pretty`, except that arrays of
/// scalars (and arrays of such arrays, like the sample series) stay on one
/// line, so a report with 50 000 samples is not 200 000 lines long.
pub fn to_pretty_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn is_flat(value: &Value) -> bool {
    match value {
        Value::Array(items) => items
            .iter()
            .all(|v| !v.is_object() && (!v.is_array() || is_flat(v))),
        Value::Object(map) => map.is_empty(),
        _ => true,
    }
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    let indent = |out: &mut String, depth: usize| out.push_str(&"  ".repeat(depth));
    match value {
        v if is_flat(v) => out.push_str(&v.to_string()),
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                indent(out, depth + 1);
                write_value(out, item, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            indent(out, depth);
            out.push(']');
        }
        Value::Object(map) => {
            out.push_str("{\n");
            for (i, (key, item)) in map.iter().enumerate() {
                indent(out, depth + 1);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_value(out, item, depth + 1);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            indent(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_beyond_the_reservoir() {
        let mut stats = KindStats::default();
        for i in 1..=(SAMPLES_KEPT_MAX as u64 * 2) {
            stats.record(0, i);
        }
        assert_eq!(stats.samples.len(), SAMPLES_KEPT_MAX);
        let sorted = stats.sorted();
        assert_eq!(percentile_ms(&sorted, 100.0), 100.0);
        assert_eq!(percentile_ms(&sorted, 50.0), 50.001);
    }

    #[test]
    fn histogram_counts_every_latency() {
        let sorted = vec![150, 150, 2_000, 1_000_000, 500_000_000];
        let buckets = histogram(&sorted);
        let total: u64 = buckets
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[1].as_u64().unwrap())
            .sum();
        assert_eq!(total, 5);
        assert!(buckets.as_array().unwrap().last().unwrap()[0].is_null());
    }

    #[test]
    fn pretty_json_keeps_series_on_one_line() {
        let v = json!({ "a": { "s": [[1, 2], [3, 4]] }, "b": [{ "c": 1 }] });
        let text = to_pretty_json(&v);
        assert!(text.contains("\"s\": [[1,2],[3,4]]"), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }
}
