//! Latency samples, error counts and the summary one run reports.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Latency samples kept per client (one `u32` of microseconds each); past it, later samples
/// replace random earlier ones (reservoir sampling keeps the percentiles unbiased).
pub const SAMPLES_PER_CLIENT_MAX: usize = 1_000_000;

/// What one client measured.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Operations that succeeded.
    pub ops: u64,
    /// Latencies of successful operations, in microseconds (a reservoir past the bound).
    pub latencies_us: Vec<u32>,
    /// Failed operations by SQLSTATE (or a short word for failures without one).
    pub errors: BTreeMap<String, u64>,
    random_state: u64,
}

impl ClientStats {
    pub fn new(seed: u64) -> Self {
        ClientStats {
            random_state: seed | 1,
            ..ClientStats::default()
        }
    }

    pub fn record_ok(&mut self, latency: Duration) {
        self.ops += 1;
        let latency_us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        if self.latencies_us.len() < SAMPLES_PER_CLIENT_MAX {
            self.latencies_us.push(latency_us);
        } else {
            self.random_state ^= self.random_state << 13;
            self.random_state ^= self.random_state >> 7;
            self.random_state ^= self.random_state << 17;
            let slot = self.random_state % self.ops;
            if let Some(sample) = self.latencies_us.get_mut(slot as usize) {
                *sample = latency_us;
            }
        }
    }

    pub fn record_error(&mut self, code: &str) {
        *self.errors.entry(code.to_string()).or_insert(0) += 1;
    }
}

/// Latency percentiles of one run, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
    pub mean: u32,
}

/// The summary of one run (paxsql or the SQLite baseline).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_second: f64,
    pub latency_us: Latency,
    pub errors: BTreeMap<String, u64>,
}

impl Summary {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Merges the clients' measurements of a run that lasted `elapsed`.
pub fn summarize(clients: Vec<ClientStats>, elapsed: Duration) -> Summary {
    let mut samples = Vec::new();
    let mut errors = BTreeMap::new();
    let mut ops = 0;
    for client in clients {
        ops += client.ops;
        samples.extend_from_slice(&client.latencies_us);
        for (code, count) in client.errors {
            *errors.entry(code).or_insert(0) += count;
        }
    }
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Summary {
        ops,
        seconds,
        ops_per_second: ops as f64 / seconds,
        latency_us: latency_of(&mut samples),
        errors,
    }
}

/// Percentiles of `samples` (sorted in place); all zero when there are none.
pub fn latency_of(samples: &mut [u32]) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable();
    let total: u64 = samples.iter().map(|&sample| u64::from(sample)).sum();
    Latency {
        p50: percentile(samples, 0.50),
        p99: percentile(samples, 0.99),
        p999: percentile(samples, 0.999),
        max: samples[samples.len() - 1],
        mean: (total / samples.len() as u64) as u32,
    }
}

/// The nearest-rank percentile of sorted, non-empty `samples`.
fn percentile(sorted: &[u32], fraction: f64) -> u32 {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<u32> = (1..=1000).rev().collect();
        let latency = latency_of(&mut samples);
        assert_eq!(latency.p50, 500);
        assert_eq!(latency.p99, 990);
        assert_eq!(latency.p999, 999);
        assert_eq!(latency.max, 1000);
        assert_eq!(latency.mean, 500);
    }

    #[test]
    fn summary_merges_clients_and_counts_errors_by_code() {
        let mut first = ClientStats::new(1);
        first.record_ok(Duration::from_micros(10));
        first.record_error("40003");
        let mut second = ClientStats::new(2);
        second.record_ok(Duration::from_micros(30));
        second.record_error("40003");
        second.record_error("57P03");
        let summary = summarize(vec![first, second], Duration::from_secs(2));
        assert_eq!(summary.ops, 2);
        assert_eq!(summary.ops_per_second, 1.0);
        assert_eq!(summary.latency_us.p50, 10);
        assert_eq!(summary.latency_us.max, 30);
        assert_eq!(summary.errors["40003"], 2);
        assert_eq!(summary.error_count(), 3);
    }
}
