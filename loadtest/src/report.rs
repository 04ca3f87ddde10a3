//! Results: counts, throughput and latency percentiles.

use serde_json::{Value, json};
use std::time::Duration;

/// Latency samples of one kind, in microseconds.
#[derive(Default, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.0
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The `p`-th percentile (0–100) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[rank.min(v.len() - 1)] as f64 / 1000.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn to_json(&self) -> Value {
        json!({
            "count": self.len(),
            "p50_ms": self.percentile_ms(50.0),
            "p90_ms": self.percentile_ms(90.0),
            "p99_ms": self.percentile_ms(99.0),
            "max_ms": self.percentile_ms(100.0),
        })
    }
}

pub struct Report {
    pub label: String,
    pub scenario: String,
    pub parameters: Value,
    pub elapsed: Duration,
    /// Events the scenario produced (messages sent).
    pub events: usize,
    pub latencies: Vec<(String, Latencies)>,
    /// Scenario-specific figures (the media scenario's MB/s), or null.
    pub figures: Value,
}

impl Report {
    pub fn labelled(mut self, label: &str) -> Self {
        self.label = label.to_owned();
        self
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn to_json(&self) -> Value {
        let latencies: serde_json::Map<String, Value> = self
            .latencies
            .iter()
            .map(|(k, l)| (k.clone(), l.to_json()))
            .collect();
        json!({
            "label": self.label,
            "scenario": self.scenario,
            "parameters": self.parameters,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events": self.events,
            "events_per_s": self.events_per_second(),
            "latency": latencies,
            "figures": self.figures,
        })
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {} {}: {} events in {:.2} s = {:.0} events/s",
            self.label,
            self.scenario,
            self.parameters,
            self.events,
            self.elapsed.as_secs_f64(),
            self.events_per_second()
        );
        if !self.figures.is_null() {
            s.push_str(&format!("\n  {}", self.figures));
        }
        for (kind, l) in &self.latencies {
            s.push_str(&format!(
                "\n  {kind}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
                l.len(),
                l.percentile_ms(50.0),
                l.percentile_ms(90.0),
                l.percentile_ms(99.0),
                l.percentile_ms(100.0)
            ));
        }
        s
    }
}
