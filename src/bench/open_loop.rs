//! The open loop: C connections fire `placeOrder` for D seconds, as fast as
//! they go or at `--rate` overall, each with a fresh idempotency key and
//! without waiting for the order's decision. Then the bench waits (bounded)
//! for every accepted order to be final, and reports how much was taken in,
//! how much was decided, how fast, and what was left undecided.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::Shape;
use super::answer::{Answer, classify, transport_failure};
use super::check::{self, Checked};
use super::client::Gateway;
use super::cpu::CpuMark;
use super::feed::{Feed, Final, Watched};
use super::report::{Codes, OpenLoopReport, percentiles};
use super::seed::Seed;

const PLACE: &str =
    "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId error { code } } }";

/// What the open loop was asked to do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub shape: Shape,
    pub duration: Duration,
    pub rate: Option<f64>,
    pub drain_timeout: Duration,
}

/// An order the gateway took in (ACCEPTED or PENDING).
#[derive(Clone, Debug)]
struct Placed {
    order_id: String,
    sent: Instant,
    answered: Instant,
}

/// What the connections saw, merged.
#[derive(Default)]
struct Tally {
    sent: usize,
    accepted: Vec<Placed>,
    pending: Vec<Placed>,
    rejected: Codes,
    overloaded: usize,
    refused: Codes,
    failed: Codes,
    /// placeOrder latency of the answers that took an order in.
    latencies: Vec<Duration>,
    last_answer: Option<Instant>,
}

impl Tally {
    fn record(&mut self, answer: Answer, sent: Instant, answered: Instant) {
        self.sent += 1;
        self.last_answer = self.last_answer.max(Some(answered));
        match answer {
            Answer::Accepted { order_id } => {
                self.latencies.push(answered - sent);
                self.accepted.push(Placed { order_id, sent, answered });
            }
            Answer::Pending { order_id } => {
                self.latencies.push(answered - sent);
                self.pending.push(Placed { order_id, sent, answered });
            }
            Answer::Rejected { code } => *self.rejected.entry(code).or_default() += 1,
            Answer::Overloaded => self.overloaded += 1,
            Answer::Refused { code } => *self.refused.entry(code).or_default() += 1,
            Answer::Failed { reason } => *self.failed.entry(reason).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.accepted.extend(other.accepted);
        self.pending.extend(other.pending);
        self.overloaded += other.overloaded;
        for (mine, theirs) in [(&mut self.rejected, other.rejected), (&mut self.refused, other.refused)] {
            for (code, count) in theirs {
                *mine.entry(code).or_default() += count;
            }
        }
        for (reason, count) in other.failed {
            *self.failed.entry(reason).or_default() += count;
        }
        self.latencies.extend(other.latencies);
        self.last_answer = self.last_answer.max(other.last_answer);
    }
}

pub(crate) async fn run(gateway: &Gateway, seed: &Seed, plan: Plan) -> anyhow::Result<()> {
    let feed = Feed::open(gateway, &seed.customer_id).await?;
    let next = Arc::new(AtomicUsize::new(0));
    eprintln!(
        "bench: open loop, {} connections for {} s ({}), {} sku(s), {} line(s) per order",
        plan.shape.concurrency,
        plan.duration.as_secs_f64(),
        plan.rate.map_or_else(|| "as fast as they go".into(), |rate| format!("{rate}/s")),
        plan.shape.skus,
        plan.shape.lines
    );
    let cpu = CpuMark::now();
    let start = Instant::now();
    // Spawned, so the connections spread over the runtime's worker threads.
    let connections: Vec<_> = (0..plan.shape.concurrency)
        .map(|_| tokio::spawn(connection(gateway.clone(), seed.clone(), plan, start, next.clone())))
        .collect();
    let mut tally = Tally::default();
    for connection in connections {
        tally.merge(connection.await?);
    }
    let load_end = Instant::now();
    let cpu = cpu.since();
    eprintln!(
        "bench: load over after {:.1} s; waiting up to {} s for decisions",
        (load_end - start).as_secs_f64(),
        plan.drain_timeout.as_secs()
    );

    let awaited: HashSet<String> =
        tally.accepted.iter().chain(&tally.pending).map(|placed| placed.order_id.clone()).collect();
    let watched = feed.finish(awaited.clone(), load_end + plan.drain_timeout).await;
    let waited_until = Instant::now();
    let unresolved: Vec<String> = awaited
        .into_iter()
        .filter(|id| watched.sightings.get(id).is_none_or(|sighting| sighting.decided.is_none()))
        .collect();
    if !unresolved.is_empty() {
        eprintln!("bench: {} orders not seen final in the feed: reading each with order(id:)", unresolved.len());
    }
    let checked = check::statuses(gateway, unresolved, Instant::now() + check::CHECK_TIMEOUT).await;
    let report = summarize(plan, tally, &watched, &checked, Moments { start, load_end, waited_until }, cpu);
    print!("{report}");
    Ok(())
}

/// One connection: places orders until the load's end.
async fn connection(gateway: Gateway, seed: Seed, plan: Plan, start: Instant, next: Arc<AtomicUsize>) -> Tally {
    let end = start + plan.duration;
    let mut tally = Tally::default();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        match plan.rate {
            Some(rate) => {
                let at = start + Duration::from_secs_f64(n as f64 / rate);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at).await;
            }
            None if Instant::now() >= end => break,
            None => {}
        }
        let input = seed.order(n, plan.shape.lines, 1, Some(uuid::Uuid::now_v7().to_string()));
        let sent = Instant::now();
        let answer = place(&gateway, input).await;
        tally.record(answer, sent, Instant::now());
    }
    tally
}

async fn place(gateway: &Gateway, input: Value) -> Answer {
    let request =
        gateway.http.post(&gateway.endpoint).json(&json!({ "query": PLACE, "variables": { "input": input } }));
    match request.send().await {
        Err(error) => transport_failure(&error),
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.ok();
            classify(status, body.as_ref())
        }
    }
}

/// The run's landmarks: first request, load end, end of the drain wait.
#[derive(Clone, Copy)]
struct Moments {
    start: Instant,
    load_end: Instant,
    waited_until: Instant,
}

fn summarize(
    plan: Plan,
    mut tally: Tally,
    watched: &Watched,
    checked: &HashMap<String, Checked>,
    at: Moments,
    cpu: Option<(f64, f64)>,
) -> OpenLoopReport {
    let mut report = OpenLoopReport {
        concurrency: plan.shape.concurrency,
        skus: plan.shape.skus,
        lines: plan.shape.lines,
        duration: plan.duration,
        rate: plan.rate,
        drain_timeout: plan.drain_timeout,
        sent: tally.sent,
        accepted: tally.accepted.len(),
        pending: tally.pending.len(),
        overloaded: tally.overloaded,
        load: tally.last_answer.map_or(Duration::ZERO, |last| last - at.start),
        waited: at.waited_until - at.load_end,
        feed_failed: watched.error.is_some(),
        place: percentiles(&mut tally.latencies),
        cpu,
        ..OpenLoopReport::default()
    };
    let (mut visible, mut confirmed) = (Vec::new(), Vec::new());
    let mut last_decision: Option<Instant> = None;
    let accepted = tally.accepted.iter().map(|placed| (placed, true));
    for (placed, was_accepted) in accepted.chain(tally.pending.iter().map(|placed| (placed, false))) {
        let sighting = watched.sightings.get(&placed.order_id);
        if was_accepted && let Some(sighting) = sighting {
            visible.push(sighting.first_seen.saturating_duration_since(placed.answered));
        }
        let decided = match sighting.and_then(|sighting| sighting.decided) {
            Some((when, status)) => {
                last_decision = last_decision.max(Some(when));
                if status == Final::Confirmed {
                    confirmed.push(when.saturating_duration_since(placed.sent));
                }
                Some(status)
            }
            None => match checked.get(&placed.order_id) {
                Some(Checked::Final(status)) => {
                    report.decided_by_query += 1;
                    // Decided some time before the drain ended: as late as that, to be safe.
                    last_decision = last_decision.max(Some(at.waited_until));
                    Some(*status)
                }
                _ => None,
            },
        };
        match decided {
            Some(Final::Confirmed) => report.final_confirmed += 1,
            Some(Final::Rejected) => report.final_rejected += 1,
            Some(Final::Cancelled) => report.final_cancelled += 1,
            None => report.undecided += 1,
        }
    }
    report.decision_window = last_decision.map(|last| last - at.start);
    if report.undecided == 0 {
        report.drain = Some(last_decision.map_or(Duration::ZERO, |last| last.saturating_duration_since(at.load_end)));
    }
    report.visible = percentiles(&mut visible);
    report.confirmed = percentiles(&mut confirmed);
    (report.rejected, report.refused, report.failed) = (tally.rejected, tally.refused, tally.failed);
    report
}

#[cfg(test)]
mod tests {
    use super::super::feed::Sighting;
    use super::*;

    fn plan() -> Plan {
        Plan {
            shape: Shape { concurrency: 2, skus: 1, lines: 1 },
            duration: Duration::from_secs(10),
            rate: None,
            drain_timeout: Duration::from_secs(30),
        }
    }

    fn accepted(id: &str) -> Answer {
        Answer::Accepted { order_id: id.into() }
    }

    #[test]
    fn a_run_is_summarized_from_answers_sightings_and_checks() {
        let start = Instant::now();
        let s = |ms: u64| start + Duration::from_millis(ms);
        let mut tally = Tally::default();
        tally.record(accepted("seen-confirmed"), s(0), s(10));
        tally.record(accepted("seen-pending"), s(5), s(20));
        tally.record(accepted("checked-rejected"), s(6), s(30));
        tally.record(Answer::Pending { order_id: "queued".into() }, s(7), s(5_007));
        tally.record(Answer::Overloaded, s(8), s(9));
        tally.record(Answer::Refused { code: "UNAVAILABLE".into() }, s(8), s(9));
        let mut other = Tally::default();
        other.record(Answer::Failed { reason: "timeout".into() }, s(9), s(9_000));
        tally.merge(other);
        let mut watched = Watched::default();
        watched
            .sightings
            .insert("seen-confirmed".into(), Sighting { first_seen: s(40), decided: Some((s(200), Final::Confirmed)) });
        watched.sightings.insert("seen-pending".into(), Sighting { first_seen: s(40), decided: None });
        let checked = HashMap::from([
            ("seen-pending".into(), Checked::Undecided),
            ("checked-rejected".into(), Checked::Final(Final::Rejected)),
        ]);
        let at = Moments { start, load_end: s(10_000), waited_until: s(40_000) };
        let report = summarize(plan(), tally, &watched, &checked, at, None);

        assert_eq!((report.sent, report.accepted, report.pending, report.overloaded), (7, 3, 1, 1));
        assert_eq!(report.load, Duration::from_millis(9_000));
        assert_eq!((report.final_confirmed, report.final_rejected, report.decided_by_query), (1, 1, 1));
        assert_eq!(report.undecided, 2, "seen-pending and queued");
        assert_eq!(report.drain, None, "not drained");
        assert_eq!(
            report.decision_window,
            Some(Duration::from_secs(40)),
            "a decision found by query counts as late as the drain's end"
        );
        assert_eq!(report.visible.map(|p| (p.p50, p.p99)), Some((20.0, 30.0)));
        assert_eq!(report.confirmed.map(|p| p.p50), Some(200.0));
        assert_eq!(report.place.map(|p| p.p99), Some(5_000.0));
        assert_eq!(report.failed, Codes::from([("timeout".into(), 1)]));
    }

    #[test]
    fn a_drained_run_reports_the_time_from_load_end_to_the_last_decision() {
        let start = Instant::now();
        let s = |ms: u64| start + Duration::from_millis(ms);
        let mut tally = Tally::default();
        tally.record(accepted("a"), s(0), s(10));
        tally.record(accepted("b"), s(1), s(11));
        let mut watched = Watched::default();
        watched
            .sightings
            .insert("a".into(), Sighting { first_seen: s(20), decided: Some((s(12_000), Final::Confirmed)) });
        watched
            .sightings
            .insert("b".into(), Sighting { first_seen: s(20), decided: Some((s(12_500), Final::Confirmed)) });
        let at = Moments { start, load_end: s(10_000), waited_until: s(12_500) };
        let report = summarize(plan(), tally, &watched, &HashMap::new(), at, Some((1.0, 10.0)));
        assert_eq!(report.undecided, 0);
        assert_eq!(report.drain, Some(Duration::from_millis(2_500)));
        assert_eq!(report.decision_window, Some(Duration::from_millis(12_500)));
    }
}
