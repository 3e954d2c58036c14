//! What a bench run prints. The open loop's report is lines of
//! `tag key=value ...` in which every key is unique, so a script reads a
//! figure with `grep -o ' key=[^ ]*'`; a figure that could not be measured
//! is `n/a`. The closed loop keeps its older, human-shaped lines, which
//! `scripts/bench` and docs/benchmarks.md already read.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Nearest-rank percentiles of a set of durations, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// The percentiles of `samples` (sorted in place), `None` when empty.
pub(crate) fn percentiles(samples: &mut [Duration]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let index = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1000.0
    };
    Some(Percentiles { p50: at(0.50), p95: at(0.95), p99: at(0.99) })
}

/// The closed loop's latency line: `p50 1.0 ms  p95 2.0 ms  p99 3.0 ms`.
pub(crate) fn closed_loop_latency(samples: &mut [Duration]) -> String {
    match percentiles(samples) {
        None => "no samples".into(),
        Some(p) => format!("p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms", p.p50, p.p95, p.p99),
    }
}

/// Counts by error code, for one kind of answer.
pub(crate) type Codes = BTreeMap<String, usize>;

/// Everything the open loop measured.
#[derive(Debug, Default)]
pub(crate) struct OpenLoopReport {
    pub concurrency: usize,
    pub skus: usize,
    pub lines: usize,
    pub duration: Duration,
    pub rate: Option<f64>,
    pub drain_timeout: Duration,
    pub sent: usize,
    pub accepted: usize,
    /// Answered PENDING: durably queued, not decided within the gateway's wait.
    pub pending: usize,
    /// Answered REJECTED, by the command's error code.
    pub rejected: Codes,
    /// Refused as overloaded (code OVERLOADED, or HTTP 429/503): not failures.
    pub overloaded: usize,
    /// Refused with another GraphQL error, by code.
    pub refused: Codes,
    /// No GraphQL answer (transport error, timeout, unexpected HTTP status), by reason.
    pub failed: Codes,
    /// First request to the last answer of the load.
    pub load: Duration,
    pub final_confirmed: usize,
    pub final_rejected: usize,
    pub final_cancelled: usize,
    /// Final orders the feed did not report as final, found by `order(id:)`.
    pub decided_by_query: usize,
    /// Accepted (or PENDING-answered) orders with no final status at the end.
    pub undecided: usize,
    /// First request to the last decision seen.
    pub decision_window: Option<Duration>,
    /// Load end to the last decision, when every order was decided.
    pub drain: Option<Duration>,
    /// How long the bench waited for decisions after the load.
    pub waited: Duration,
    /// The `ordersUpdated` feed stopped before the drain ended (its orders were read one by one).
    pub feed_failed: bool,
    pub place: Option<Percentiles>,
    pub visible: Option<Percentiles>,
    pub confirmed: Option<Percentiles>,
    /// The bench's CPU seconds over the load and that as % of one core.
    pub cpu: Option<(f64, f64)>,
}

fn seconds(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64())
}

fn per_second(count: usize, window: Option<Duration>) -> String {
    match window {
        Some(window) if !window.is_zero() => format!("{:.1}", count as f64 / window.as_secs_f64()),
        _ => "n/a".into(),
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |value| format!("{value:.1}"))
}

fn total(codes: &Codes) -> usize {
    codes.values().sum()
}

impl fmt::Display for OpenLoopReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.rate.map_or_else(|| "max".into(), |rate| format!("{rate}"));
        writeln!(
            f,
            "open-loop concurrency={} duration_s={} rate={rate} skus={} lines={} drain_timeout_s={}",
            self.concurrency,
            seconds(self.duration),
            self.skus,
            self.lines,
            seconds(self.drain_timeout)
        )?;
        writeln!(
            f,
            "requests sent={} accepted={} pending={} answered_rejected={} refused_overloaded={} refused_other={} failed={}",
            self.sent,
            self.accepted,
            self.pending,
            total(&self.rejected),
            self.overloaded,
            total(&self.refused),
            total(&self.failed)
        )?;
        writeln!(
            f,
            "throughput load_s={} accepted_per_s={} confirmed_per_s={} decision_window_s={}",
            seconds(self.load),
            per_second(self.accepted, Some(self.load)),
            per_second(self.final_confirmed, self.decision_window),
            self.decision_window.map_or_else(|| "n/a".into(), seconds)
        )?;
        writeln!(
            f,
            "decisions final_confirmed={} final_rejected={} final_cancelled={} decided_by_query={} undecided={} drained={} drain_s={} waited_s={} feed={}",
            self.final_confirmed,
            self.final_rejected,
            self.final_cancelled,
            self.decided_by_query,
            self.undecided,
            if self.undecided == 0 { "yes" } else { "no" },
            self.drain.map_or_else(|| "n/a".into(), seconds),
            seconds(self.waited),
            if self.feed_failed { "failed" } else { "ok" }
        )?;
        let pick = |p: Option<Percentiles>, at: fn(Percentiles) -> f64| ms(p.map(at));
        writeln!(
            f,
            "latency_ms place_p50={} place_p95={} place_p99={} visible_p50={} visible_p99={} confirmed_p50={} confirmed_p99={}",
            pick(self.place, |p| p.p50),
            pick(self.place, |p| p.p95),
            pick(self.place, |p| p.p99),
            pick(self.visible, |p| p.p50),
            pick(self.visible, |p| p.p99),
            pick(self.confirmed, |p| p.p50),
            pick(self.confirmed, |p| p.p99),
        )?;
        for (kind, codes) in [("rejected", &self.rejected), ("refused", &self.refused), ("failed", &self.failed)] {
            for (code, count) in codes {
                writeln!(f, "codes {kind}_{code}={count}")?;
            }
        }
        let (cpu_s, cpu_pct) = self.cpu.map_or_else(
            || ("n/a".into(), "n/a".into()),
            |(used, percent)| (format!("{used:.2}"), format!("{percent:.0}")),
        );
        writeln!(f, "bench-cpu bench_cpu_s={cpu_s} bench_cpu_pct_of_one_core={cpu_pct}")
    }
}

/// The `key=value` fields of one report line (the leading tag skipped).
#[cfg(test)]
pub(crate) fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace().skip(1).filter_map(|field| field.split_once('=')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&ms| Duration::from_millis(ms)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples = millis(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(percentiles(&mut samples), Some(Percentiles { p50: 50.0, p95: 95.0, p99: 99.0 }));
        assert_eq!(percentiles(&mut millis(&[7])), Some(Percentiles { p50: 7.0, p95: 7.0, p99: 7.0 }));
        let two = percentiles(&mut millis(&[10, 20])).unwrap();
        assert_eq!((two.p50, two.p99), (10.0, 20.0));
        assert_eq!(percentiles(&mut []), None);
        assert_eq!(closed_loop_latency(&mut []), "no samples");
        assert_eq!(closed_loop_latency(&mut millis(&[2])), "p50 2.0 ms  p95 2.0 ms  p99 2.0 ms");
    }

    fn stalled_run() -> OpenLoopReport {
        OpenLoopReport {
            concurrency: 64,
            skus: 1,
            lines: 1,
            duration: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(30),
            sent: 8000,
            accepted: 7500,
            overloaded: 400,
            refused: Codes::from([("INVALID_INPUT".into(), 100)]),
            load: Duration::from_secs(15),
            final_confirmed: 1500,
            undecided: 6000,
            decision_window: Some(Duration::from_secs(30)),
            waited: Duration::from_secs(30),
            place: Some(Percentiles { p50: 80.0, p95: 150.0, p99: 200.0 }),
            cpu: Some((3.0, 20.0)),
            ..OpenLoopReport::default()
        }
    }

    #[test]
    fn the_report_gives_every_figure_a_unique_key_a_script_can_grep() {
        let text = stalled_run().to_string();
        let mut seen = BTreeMap::new();
        for line in text.lines() {
            for (key, value) in fields(line) {
                assert!(seen.insert(key, value).is_none(), "{key} appears twice in\n{text}");
            }
        }
        assert_eq!(seen["accepted_per_s"], "500.0");
        assert_eq!(seen["confirmed_per_s"], "50.0");
        assert_eq!(seen["refused_overloaded"], "400");
        assert_eq!(seen["refused_other"], "100");
        assert_eq!(seen["refused_INVALID_INPUT"], "100");
        assert_eq!(seen["undecided"], "6000");
        assert_eq!(seen["drained"], "no");
        assert_eq!(seen["drain_s"], "n/a");
        assert_eq!(seen["place_p99"], "200.0");
        assert_eq!(seen["confirmed_p50"], "n/a");
        assert_eq!(seen["rate"], "max");
        assert_eq!(seen["bench_cpu_pct_of_one_core"], "20");
    }

    #[test]
    fn a_run_with_nothing_decided_says_n_a_rather_than_dividing_by_zero() {
        let report = OpenLoopReport { decision_window: None, load: Duration::ZERO, ..stalled_run() };
        let text = report.to_string();
        let throughput = text.lines().find(|line| line.starts_with("throughput")).unwrap();
        assert_eq!(fields(throughput)["accepted_per_s"], "n/a");
        assert_eq!(fields(throughput)["confirmed_per_s"], "n/a");
    }
}
