//! CPU and memory of the server under test (from `/proc/PID`) and of the
//! load generator itself (from `/proc/self`), over the measured phase.
//!
//! The generator's own CPU is always reported so a reader can tell whether
//! the generator, not the server, was the bottleneck (near 100 % of a core
//! per runtime worker means it was).

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often the server process is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// Clock ticks per second of `/proc/*/stat`'s `utime`/`stime`. `USER_HZ` is
/// 100 on every mainstream Linux architecture; reading `sysconf` would need
/// `unsafe` (denied in this workspace) or a libc binding.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// One sample of the server process.
#[derive(Clone, Copy, Debug)]
pub struct ServerSample {
    /// Since the measured phase began.
    pub offset_ms: u64,
    pub rss_mb: f64,
    /// CPU over the preceding interval, as % of one core.
    pub cpu_percent: f64,
}

/// What was measured over one run.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub server_pid: Option<u32>,
    pub server: Vec<ServerSample>,
    /// The generator's CPU over the measured phase, as % of one core; `None`
    /// where `/proc` is unavailable.
    pub generator_cpu_percent: Option<f64>,
}

impl Resources {
    pub fn rss_mb_max(&self) -> Option<f64> {
        self.server.iter().map(|s| s.rss_mb).reduce(f64::max)
    }

    pub fn rss_mb_mean(&self) -> Option<f64> {
        mean(self.server.iter().map(|s| s.rss_mb))
    }

    pub fn cpu_percent_mean(&self) -> Option<f64> {
        // The first sample has no preceding interval.
        mean(self.server.iter().skip(1).map(|s| s.cpu_percent))
    }

    pub fn to_json(&self) -> Value {
        let server = self.server_pid.map(|pid| {
            json!({
                "pid": pid,
                "rss_mb_max": self.rss_mb_max(),
                "rss_mb_mean": self.rss_mb_mean(),
                "cpu_percent_mean": self.cpu_percent_mean(),
                "series_columns": ["offset_ms", "rss_mb", "cpu_percent"],
                "series": self
                    .server
                    .iter()
                    .map(|s| json!([s.offset_ms, round2(s.rss_mb), round2(s.cpu_percent)]))
                    .collect::<Vec<_>>(),
            })
        });
        json!({
            "generator_cpu_percent": self.generator_cpu_percent,
            "server": server,
        })
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Samples resources from the start of the measured phase until
/// [`Monitor::finish`].
pub struct Monitor {
    start: Instant,
    self_cpu_ticks: Option<u64>,
    server_pid: Option<u32>,
    sampler: Option<JoinHandle<Vec<ServerSample>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Monitor {
    pub fn start(start: Instant, server_pid: Option<u32>) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let sampler = server_pid.map(|pid| {
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut last: Option<(Instant, u64)> = None;
                let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    // One last sample at the stop, so even a short run
                    // has a CPU interval.
                    let last_round = tokio::select! {
                        _ = interval.tick() => false,
                        _ = stopped.changed() => true,
                    };
                    let now = Instant::now();
                    let pid_dir = pid.to_string();
                    // None: the process is gone (or this is not Linux).
                    if let (Some(ticks), Some(rss_mb)) = (cpu_ticks(&pid_dir), rss_mb(pid)) {
                        let cpu_percent = last.map_or(0.0, |(at, before)| {
                            let secs = now.duration_since(at).as_secs_f64().max(1e-9);
                            ticks.saturating_sub(before) as f64 / CLOCK_TICKS_PER_S / secs * 100.0
                        });
                        last = Some((now, ticks));
                        samples.push(ServerSample {
                            offset_ms: u64::try_from(now.duration_since(start).as_millis())
                                .unwrap_or(u64::MAX),
                            rss_mb,
                            cpu_percent,
                        });
                    }
                    if last_round {
                        break;
                    }
                }
                samples
            })
        });
        Self {
            start,
            self_cpu_ticks: cpu_ticks("self"),
            server_pid,
            sampler,
            stop,
        }
    }

    pub async fn finish(self) -> Resources {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let generator_cpu_percent = match (self.self_cpu_ticks, cpu_ticks("self")) {
            (Some(before), Some(after)) => {
                Some(after.saturating_sub(before) as f64 / CLOCK_TICKS_PER_S / wall * 100.0)
            }
            _ => None,
        };
        let _ = self.stop.send(true);
        let server = match self.sampler {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        Resources {
            server_pid: self.server_pid,
            server,
            generator_cpu_percent,
        }
    }
}

/// `utime + stime` of `/proc/{pid}/stat`, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields after it start with field 3 (state). utime and stime are 14, 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of `/proc/{pid}/status`, in MB (10^6 bytes).
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss_mb(&status)
}

fn parse_rss_mb(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let stat = "1234 (my server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 \
                    100 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tmyelin\nVmPeak:\t  2000 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(parse_rss_mb(status), Some(1.024));
    }
}
