//! The order-fulfillment process manager's state machine, without I/O:
//! which command comes next, and what each answer changes. Its runner
//! ([`super::SagaRunner`]) sends the commands, stores the state, and feeds
//! the answers and the order's events back in.
//!
//! ```text
//! OrderPlaced → check customer and credit → reserve each sku → authorize payment → confirm
//!                    │                 │                   │              │
//!                    └─────────────────┴───── fails ───────┴──────────────┘
//!                                      ▼
//!             compensate: release every sku, refund (or void), reject
//! CONFIRMED + OrderCancelled → refund, release every sku
//! CONFIRMED + OrderShipped   → capture, commit every sku's stock
//! ```
//! Every command's id is derived from the order id and the step, so a
//! repeated step (a redelivered event, a resumed saga) is decided once.

use serde::{Deserialize, Serialize};

use schema::codes;
use schema::order::{OrderLine, PricedLine, total_cents};

/// A command the saga sends; `key` names it within the saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    CheckCustomer,
    Reserve { sku: String, quantity: u32, expected_unit_price_cents: Option<i64> },
    Authorize { amount_cents: i64 },
    Confirm { lines: Vec<PricedLine>, total_cents: i64 },
    Release { sku: String },
    Refund,
    Reject { code: String, message: String },
    Capture,
    Commit { sku: String },
}

impl Step {
    /// The step's kind, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Step::CheckCustomer => "check_customer",
            Step::Reserve { .. } => "reserve",
            Step::Authorize { .. } => "authorize",
            Step::Confirm { .. } => "confirm",
            Step::Release { .. } => "release",
            Step::Refund => "refund",
            Step::Reject { .. } => "reject",
            Step::Capture => "capture",
            Step::Commit { .. } => "commit",
        }
    }

    /// Unique per saga; with the order id, it derives the command id.
    pub fn key(&self) -> String {
        match self {
            Self::CheckCustomer => "check-customer".into(),
            Self::Reserve { sku, .. } => format!("reserve:{sku}"),
            Self::Authorize { .. } => "authorize".into(),
            Self::Confirm { .. } => "confirm".into(),
            Self::Release { sku } => format!("release:{sku}"),
            Self::Refund => "refund".into(),
            Self::Reject { .. } => "reject".into(),
            Self::Capture => "capture".into(),
            Self::Commit { sku } => format!("commit:{sku}"),
        }
    }
}

/// What became of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// Done. For a reservation, the catalog price; for an authorization,
    /// whether the provider approved (a decline is an accepted, recorded fact).
    Done { unit_price_cents: Option<i64>, approved: Option<bool> },
    /// Refused, with the refusal's code and message.
    Refused { code: String, message: String },
    /// No answer (yet): try again later, unless the saga is past its deadline.
    NoAnswer,
    /// The customer is registered, with this credit limit; the order is
    /// worth at least `least_value_cents` (the prices known before any
    /// stock is held: the catalog's where seen, else the client's).
    CustomerChecked { credit_limit_cents: i64, least_value_cents: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Forward steps toward confirmation.
    Running,
    /// Confirmed; waiting for a cancellation or a shipment.
    Confirmed,
    /// Working through `queue` (compensation, refund, or shipment), then done.
    Unwinding,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfillment {
    pub order_id: String,
    pub customer_id: String,
    /// Merged by sku.
    pub lines: Vec<OrderLine>,
    pub phase: Phase,
    pub customer_checked: bool,
    pub reserved: Vec<PricedLine>,
    pub authorized: bool,
    /// Steps left when unwinding, in order.
    pub queue: Vec<Step>,
    /// Keys of forward steps sent without an answer: they may still take
    /// effect, so compensation undoes them too.
    pub unanswered: Vec<String>,
    /// Why the order was rejected, once it is.
    pub outcome_code: Option<String>,
    /// Microseconds since the epoch after which a step with no answer is compensated.
    pub deadline_micros: i64,
    /// Whether the order's cancellation has been acted on.
    #[serde(default)]
    pub cancel_seen: bool,
    /// Whether the order's shipment has been acted on.
    #[serde(default)]
    pub ship_seen: bool,
    /// Attempts in a row that got no answer: the retry backs off with them.
    #[serde(default)]
    pub attempts: u32,
    /// The customer's credit limit, once checked: every reservation carries
    /// it, so no line the customer cannot pay holds stock.
    #[serde(default)]
    pub credit_limit_cents: Option<i64>,
}

impl Fulfillment {
    pub fn start(order_id: String, customer_id: String, lines: Vec<OrderLine>, deadline_micros: i64) -> Self {
        Self {
            order_id,
            customer_id,
            lines,
            phase: Phase::Running,
            customer_checked: false,
            reserved: Vec::new(),
            authorized: false,
            queue: Vec::new(),
            unanswered: Vec::new(),
            outcome_code: None,
            deadline_micros,
            cancel_seen: false,
            ship_seen: false,
            attempts: 0,
            credit_limit_cents: None,
        }
    }

    /// Acts on the order's cancellation and shipment, each once, as soon as
    /// the saga can (a shipment only once confirmed). True if anything changed.
    pub fn take_signals(&mut self, cancelled: bool, shipped: bool) -> bool {
        let mut changed = false;
        if cancelled && !self.cancel_seen {
            self.cancel_seen = true;
            self.order_cancelled();
            changed = true;
        }
        if shipped && !self.ship_seen && self.phase == Phase::Confirmed {
            self.ship_seen = true;
            self.order_shipped();
            changed = true;
        }
        changed
    }

    /// The steps to take now, which may run concurrently: every sku's
    /// reservation at once; anything else one at a time. Empty while
    /// waiting (confirmed) or done.
    pub fn next_steps(&self) -> Vec<Step> {
        if self.phase == Phase::Running && self.customer_checked {
            let reserves: Vec<Step> = self
                .lines
                .iter()
                .filter(|line| !self.reserved.iter().any(|reserved| reserved.sku == line.sku))
                .map(|line| Step::Reserve {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    expected_unit_price_cents: line.expected_unit_price_cents,
                })
                .collect();
            if !reserves.is_empty() {
                return reserves;
            }
        }
        self.next_step().into_iter().collect()
    }

    /// The step to take now; `None` while waiting (confirmed) or done.
    pub fn next_step(&self) -> Option<Step> {
        match self.phase {
            Phase::Confirmed | Phase::Done => None,
            Phase::Unwinding => self.queue.first().cloned(),
            Phase::Running => Some(if !self.customer_checked {
                Step::CheckCustomer
            } else if let Some(line) =
                self.lines.iter().find(|line| !self.reserved.iter().any(|reserved| reserved.sku == line.sku))
            {
                Step::Reserve {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    expected_unit_price_cents: line.expected_unit_price_cents,
                }
            } else if !self.authorized {
                Step::Authorize { amount_cents: total_cents(&self.reserved) }
            } else {
                Step::Confirm { lines: self.reserved.clone(), total_cents: total_cents(&self.reserved) }
            }),
        }
    }

    /// Folds a step's result in. `now_micros` decides whether a missing
    /// answer is still awaited or compensated.
    pub fn record(&mut self, step: &Step, result: StepResult, now_micros: i64) {
        self.attempts = if result == StepResult::NoAnswer { self.attempts.saturating_add(1) } else { 0 };
        if self.phase == Phase::Running && result == StepResult::NoAnswer && !self.unanswered.contains(&step.key()) {
            self.unanswered.push(step.key());
        }
        match (&self.phase, result) {
            (Phase::Running, StepResult::NoAnswer) if now_micros > self.deadline_micros => {
                self.compensate(codes::STEP_TIMED_OUT, format!("no answer to `{}` in time", step.key()), true)
            }
            (_, StepResult::NoAnswer) => {}
            // Credit before stock: an order known to be worth more than the
            // limit is declined before anything is held.
            (Phase::Running, StepResult::CustomerChecked { credit_limit_cents, least_value_cents }) => {
                self.customer_checked = true;
                self.credit_limit_cents = Some(credit_limit_cents);
                if least_value_cents > credit_limit_cents {
                    let message = format!(
                        "the order is worth at least {least_value_cents} cents, the credit limit is {credit_limit_cents}"
                    );
                    self.compensate(codes::CREDIT_LIMIT_EXCEEDED, message, true);
                }
            }
            (Phase::Running, StepResult::Refused { code, message }) => {
                let reject = code != codes::ORDER_ALREADY_CANCELLED;
                let code = match code.as_str() {
                    codes::ORDER_ALREADY_CANCELLED => codes::ORDER_CANCELLED.to_string(),
                    _ => code,
                };
                self.compensate(&code, message, reject)
            }
            (Phase::Running, StepResult::Done { unit_price_cents, approved }) => match step {
                Step::CheckCustomer => self.customer_checked = true,
                Step::Reserve { sku, quantity, .. } => self.reserved.push(PricedLine {
                    sku: sku.clone(),
                    quantity: *quantity,
                    unit_price_cents: unit_price_cents.unwrap_or(0),
                }),
                Step::Authorize { amount_cents } => {
                    if approved == Some(false) {
                        self.compensate(
                            codes::PAYMENT_DECLINED,
                            format!("the payment of {amount_cents} cents was declined"),
                            true,
                        );
                    } else {
                        self.authorized = true;
                    }
                }
                Step::Confirm { .. } => self.phase = Phase::Confirmed,
                _ => {}
            },
            // Unwinding steps are done whether accepted or refused (a refused
            // reject means the order was cancelled meanwhile): move on.
            (Phase::Unwinding, _) => {
                if self.queue.first() == Some(step) {
                    self.queue.remove(0);
                }
                if self.queue.is_empty() {
                    self.phase = Phase::Done;
                }
            }
            (Phase::Confirmed | Phase::Done, _) => {}
        }
    }

    /// The order was cancelled by its customer.
    pub fn order_cancelled(&mut self) {
        match self.phase {
            Phase::Running => self.compensate(codes::ORDER_CANCELLED, "cancelled by the customer".into(), false),
            Phase::Confirmed => {
                self.queue = std::iter::once(Step::Refund).chain(self.releases()).collect();
                self.phase = Phase::Unwinding;
            }
            Phase::Unwinding | Phase::Done => {}
        }
    }

    /// The order shipped: take the money, and the stock off the shelf.
    pub fn order_shipped(&mut self) {
        if self.phase == Phase::Confirmed {
            self.queue = std::iter::once(Step::Capture)
                .chain(self.lines.iter().map(|line| Step::Commit { sku: line.sku.clone() }))
                .collect();
            self.phase = Phase::Unwinding;
        }
    }

    /// Undo what happened or may have happened: release each sku that was
    /// reserved or got no answer (a release also closes it to a reservation
    /// arriving late), refund or void a payment that was authorized or got
    /// no answer, then reject the order.
    fn compensate(&mut self, code: &str, message: String, reject_order: bool) {
        self.outcome_code = Some(code.to_string());
        let maybe_paid = self.authorized || self.unanswered.iter().any(|key| key == "authorize");
        let reserved_or_unanswered: Vec<Step> = self
            .lines
            .iter()
            .filter(|line| {
                self.reserved.iter().any(|reserved| reserved.sku == line.sku)
                    || self.unanswered.contains(&format!("reserve:{}", line.sku))
            })
            .map(|line| Step::Release { sku: line.sku.clone() })
            .collect();
        self.queue = reserved_or_unanswered;
        if maybe_paid {
            self.queue.push(Step::Refund);
        }
        if reject_order {
            self.queue.push(Step::Reject { code: code.to_string(), message });
        }
        self.phase = if self.queue.is_empty() { Phase::Done } else { Phase::Unwinding };
    }

    fn releases(&self) -> impl Iterator<Item = Step> + '_ {
        self.lines.iter().map(|line| Step::Release { sku: line.sku.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine { sku: sku.into(), quantity, expected_unit_price_cents: None }
    }

    fn saga() -> Fulfillment {
        Fulfillment::start("o1".into(), "c1".into(), vec![line("a", 2), line("b", 1)], 1_000)
    }

    fn checked(credit_limit_cents: i64, least_value_cents: i64) -> StepResult {
        StepResult::CustomerChecked { credit_limit_cents, least_value_cents }
    }

    fn done() -> StepResult {
        StepResult::Done { unit_price_cents: None, approved: None }
    }

    fn priced(cents: i64) -> StepResult {
        StepResult::Done { unit_price_cents: Some(cents), approved: None }
    }

    fn approved(yes: bool) -> StepResult {
        StepResult::Done { unit_price_cents: None, approved: Some(yes) }
    }

    fn refused(code: &str) -> StepResult {
        StepResult::Refused { code: code.into(), message: "m".into() }
    }

    /// Runs the saga, answering each step with `answer`, until it waits or ends.
    fn run(saga: &mut Fulfillment, mut answer: impl FnMut(&Step) -> StepResult) -> Vec<Step> {
        let mut taken = Vec::new();
        while let Some(step) = saga.next_step() {
            let result = answer(&step);
            saga.record(&step, result, 0);
            taken.push(step);
            assert!(taken.len() < 50, "the saga loops: {taken:?}");
        }
        taken
    }

    fn happy(step: &Step) -> StepResult {
        match step {
            Step::Reserve { sku, .. } if sku == "a" => priced(250),
            Step::Reserve { .. } => priced(100),
            Step::Authorize { .. } => approved(true),
            _ => done(),
        }
    }

    #[test]
    fn the_happy_path_reserves_authorizes_the_catalog_total_and_confirms() {
        let mut saga = saga();
        let steps = run(&mut saga, happy);
        let keys: Vec<_> = steps.iter().map(Step::key).collect();
        assert_eq!(keys, ["check-customer", "reserve:a", "reserve:b", "authorize", "confirm"]);
        assert_eq!(steps[3], Step::Authorize { amount_cents: 600 });
        assert_eq!(saga.phase, Phase::Confirmed);
    }

    #[test]
    fn out_of_stock_releases_what_was_reserved_and_rejects_without_any_payment() {
        let mut saga = saga();
        let steps = run(&mut saga, |step| match step {
            Step::Reserve { sku, .. } if sku == "b" => refused(codes::OUT_OF_STOCK),
            other => happy(other),
        });
        let keys: Vec<_> = steps.iter().map(Step::key).collect();
        assert_eq!(keys, ["check-customer", "reserve:a", "reserve:b", "release:a", "reject"]);
        assert_eq!(saga.outcome_code.as_deref(), Some(codes::OUT_OF_STOCK));
        assert_eq!(saga.phase, Phase::Done);
    }

    #[test]
    fn a_declined_payment_releases_the_stock_and_rejects() {
        let mut saga = saga();
        let steps = run(&mut saga, |step| match step {
            Step::Authorize { .. } => approved(false),
            other => happy(other),
        });
        let keys: Vec<_> = steps.iter().map(Step::key).collect();
        assert_eq!(&keys[4..], ["release:a", "release:b", "reject"], "a decline holds no money");
        assert_eq!(saga.outcome_code.as_deref(), Some(codes::PAYMENT_DECLINED));
    }

    #[test]
    fn credit_comes_before_stock_an_order_above_the_limit_reserves_nothing() {
        let mut above = saga();
        let steps = run(&mut above, |step| match step {
            Step::CheckCustomer => checked(599, 600),
            other => happy(other),
        });
        let keys: Vec<_> = steps.iter().map(Step::key).collect();
        assert_eq!(keys, ["check-customer", "reject"], "nothing reserved, nothing to release");
        assert_eq!(above.outcome_code.as_deref(), Some(codes::CREDIT_LIMIT_EXCEEDED));

        let mut fits = saga();
        fits.record(&Step::CheckCustomer, checked(600, 600), 0);
        assert_eq!(fits.credit_limit_cents, Some(600), "the reservations carry the limit");
        assert_eq!(fits.next_steps().len(), 2);
    }

    #[test]
    fn an_unknown_customer_rejects_at_once() {
        let mut saga = saga();
        let steps = run(&mut saga, |step| match step {
            Step::CheckCustomer => refused(codes::CUSTOMER_NOT_FOUND),
            other => happy(other),
        });
        let keys: Vec<_> = steps.iter().map(Step::key).collect();
        assert_eq!(keys, ["check-customer", "reject"]);
        assert_eq!(saga.outcome_code.as_deref(), Some(codes::CUSTOMER_NOT_FOUND));
    }

    #[test]
    fn a_step_without_an_answer_waits_then_is_compensated_after_the_deadline() {
        let mut saga = saga();
        saga.record(&Step::CheckCustomer, done(), 0);
        let reserve = saga.next_step().expect("a step");
        saga.record(&reserve, StepResult::NoAnswer, 999);
        assert_eq!(saga.next_step(), Some(reserve.clone()), "retried before the deadline");
        saga.record(&reserve, StepResult::NoAnswer, 1_001);
        assert_eq!(saga.phase, Phase::Unwinding);
        assert_eq!(saga.outcome_code.as_deref(), Some(codes::STEP_TIMED_OUT));
        assert_eq!(saga.next_step(), Some(Step::Release { sku: "a".into() }), "the unanswered reservation is undone");
        let keys: Vec<_> = run(&mut saga, happy).iter().map(Step::key).collect();
        assert_eq!(keys, ["release:a", "reject"]);
    }

    #[test]
    fn an_authorization_without_an_answer_is_voided_when_compensated() {
        // Past its deadline from the start: the first missing answer compensates.
        let mut saga = Fulfillment::start("o1".into(), "c1".into(), vec![line("a", 2), line("b", 1)], -1);
        let steps = run(&mut saga, |step| match step {
            Step::Authorize { .. } => StepResult::NoAnswer,
            other => happy(other),
        });
        let keys: Vec<_> = steps.iter().map(Step::key).collect();
        assert!(
            keys.ends_with(&["release:a".into(), "release:b".into(), "refund".into(), "reject".into()]),
            "{keys:?}"
        );
    }

    #[test]
    fn unwinding_steps_are_retried_until_answered_and_never_time_out() {
        let mut saga = saga();
        saga.record(&Step::CheckCustomer, done(), 0);
        saga.record(&Step::Reserve { sku: "a".into(), quantity: 2, expected_unit_price_cents: None }, priced(1), 0);
        saga.order_cancelled();
        let first = saga.next_step().expect("a step");
        saga.record(&first, StepResult::NoAnswer, i64::MAX);
        assert_eq!(saga.next_step(), Some(first));
        assert_eq!(saga.phase, Phase::Unwinding);
    }

    #[test]
    fn cancelling_after_confirmation_refunds_and_releases() {
        let mut saga = saga();
        run(&mut saga, happy);
        saga.order_cancelled();
        let keys: Vec<_> = run(&mut saga, happy).iter().map(Step::key).collect();
        assert_eq!(keys, ["refund", "release:a", "release:b"]);
        assert_eq!(saga.phase, Phase::Done);
    }

    #[test]
    fn cancelling_while_running_compensates_without_rejecting() {
        let mut saga = saga();
        saga.record(&Step::CheckCustomer, done(), 0);
        saga.record(&Step::Reserve { sku: "a".into(), quantity: 2, expected_unit_price_cents: None }, priced(1), 0);
        saga.order_cancelled();
        let keys: Vec<_> = run(&mut saga, happy).iter().map(Step::key).collect();
        assert_eq!(keys, ["release:a"]);
        saga.order_cancelled();
        assert_eq!(saga.phase, Phase::Done, "a repeated cancellation changes nothing");
    }

    #[test]
    fn a_confirmation_refused_because_the_order_was_cancelled_compensates() {
        let mut saga = saga();
        let steps = run(&mut saga, |step| match step {
            Step::Confirm { .. } => refused(codes::ORDER_ALREADY_CANCELLED),
            other => happy(other),
        });
        let keys: Vec<_> = steps.iter().map(Step::key).collect();
        assert_eq!(&keys[5..], ["release:a", "release:b", "refund"]);
        assert_eq!(saga.outcome_code.as_deref(), Some(codes::ORDER_CANCELLED));
    }

    #[test]
    fn every_sku_is_reserved_at_once_and_a_refusal_among_them_releases_the_others() {
        let mut saga = saga();
        saga.record(&Step::CheckCustomer, done(), 0);
        let steps = saga.next_steps();
        let keys: Vec<_> = steps.iter().map(Step::key).collect();
        assert_eq!(keys, ["reserve:a", "reserve:b"]);
        // Answers are recorded successes first (as the runner does), so a
        // reservation that succeeded beside a refusal is released.
        saga.record(&steps[0], priced(250), 0);
        saga.record(&steps[1], refused(codes::OUT_OF_STOCK), 0);
        let keys: Vec<_> = run(&mut saga, happy).iter().map(Step::key).collect();
        assert_eq!(keys, ["release:a", "reject"]);
    }

    #[test]
    fn signals_are_taken_once_and_a_shipment_waits_for_the_confirmation() {
        let mut saga = saga();
        saga.record(&Step::CheckCustomer, done(), 0);
        assert!(!saga.take_signals(false, true), "not confirmed yet: the shipment waits");
        run(&mut saga, happy);
        assert_eq!(saga.phase, Phase::Confirmed);
        assert!(saga.take_signals(false, true));
        assert!(!saga.take_signals(false, true), "taken once");
        let keys: Vec<_> = run(&mut saga, happy).iter().map(Step::key).collect();
        assert_eq!(keys, ["capture", "commit:a", "commit:b"]);
        assert!(saga.take_signals(true, true), "a cancellation is noted even when too late");
        assert_eq!(saga.phase, Phase::Done);
    }

    #[test]
    fn missing_answers_count_up_and_an_answer_resets_them() {
        let mut saga = saga();
        saga.record(&Step::CheckCustomer, StepResult::NoAnswer, 0);
        saga.record(&Step::CheckCustomer, StepResult::NoAnswer, 0);
        assert_eq!(saga.attempts, 2);
        saga.record(&Step::CheckCustomer, done(), 0);
        assert_eq!(saga.attempts, 0);
    }

    #[test]
    fn shipping_captures_and_commits_the_stock() {
        let mut saga = saga();
        run(&mut saga, happy);
        saga.order_shipped();
        let keys: Vec<_> = run(&mut saga, happy).iter().map(Step::key).collect();
        assert_eq!(keys, ["capture", "commit:a", "commit:b"]);
    }
}
