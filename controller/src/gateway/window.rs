//! A namespace's model usage over the rolling 24 hours its daily budget
//! (`EvaluationQuota.spec.hard.tokensPerDay`, `costUSDPerDay`) limits. Pure: time is passed in.
//!
//! Calls are counted in [`BUCKET_SECONDS`] buckets by the second they started (as their ledger
//! records say, so a window rebuilt from the ledger after a restart holds what the old one
//! held). A bucket leaves the window once its whole span is more than 24 hours old, so a call
//! counts for at least 24 hours and less than 24 hours and one bucket: the window errs on the
//! side of the budget. At most `WINDOW_SECONDS / BUCKET_SECONDS + 1` buckets are held, and each
//! check or addition costs O(log buckets) (plus, once per bucket span, summing what is left),
//! never O(calls).

use std::collections::VecDeque;

use super::budget::{DailyBudget, Exceeded};

/// The span a daily budget covers.
pub const WINDOW_SECONDS: i64 = 24 * 60 * 60;
/// The span of one bucket.
pub const BUCKET_SECONDS: i64 = 5 * 60;

/// One bucket: the calls that started in `[start, start + BUCKET_SECONDS)`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    start: i64,
    tokens: u64,
    cost_usd: f64,
}

/// What a namespace's calls used over the last 24 hours.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// Oldest first, one per span that had a call.
    buckets: VecDeque<Bucket>,
    tokens: u64,
    cost_usd: f64,
}

impl Window {
    /// Counts a call that started at `started` (Unix seconds) and used `tokens` costing
    /// `cost_usd`; a call already out of the window at `now` is not counted.
    pub fn add(&mut self, started: i64, tokens: u64, cost_usd: f64, now: i64) {
        self.expire(now);
        let start = started.div_euclid(BUCKET_SECONDS) * BUCKET_SECONDS;
        if expired(start, now) {
            return;
        }
        // Calls mostly settle in the order they started; a long one lands a few buckets back.
        let at = match self.buckets.binary_search_by(|b| b.start.cmp(&start)) {
            Ok(at) => at,
            Err(at) => {
                self.buckets.insert(
                    at,
                    Bucket {
                        start,
                        tokens: 0,
                        cost_usd: 0.0,
                    },
                );
                at
            }
        };
        let bucket = &mut self.buckets[at];
        bucket.tokens = bucket.tokens.saturating_add(tokens);
        bucket.cost_usd += cost_usd;
        self.tokens = self.tokens.saturating_add(tokens);
        self.cost_usd += cost_usd;
    }

    /// Tokens and cost of the calls in the window at `now`.
    pub fn used(&mut self, now: i64) -> (u64, f64) {
        self.expire(now);
        (self.tokens, self.cost_usd)
    }

    /// Whether one more call may start at `now` under `budget`: as for a run's tokens and
    /// cost, a call is admitted while the window's settled usage is below the limit.
    pub fn admit(&mut self, budget: &DailyBudget, now: i64) -> Result<(), Exceeded> {
        let (tokens, cost_usd) = self.used(now);
        if let Some(limit) = budget.tokens_per_day
            && tokens >= limit
        {
            return Err(Exceeded::TokensPerDay(limit));
        }
        if let Some(limit) = budget.cost_usd_per_day
            && cost_usd >= limit
        {
            return Err(Exceeded::CostPerDay(limit));
        }
        Ok(())
    }

    /// Drops the buckets out of the window at `now`; the totals are summed again from what is
    /// left (at most once per bucket span), so subtracting never drifts the cost.
    fn expire(&mut self, now: i64) {
        let before = self.buckets.len();
        while self.buckets.front().is_some_and(|b| expired(b.start, now)) {
            self.buckets.pop_front();
        }
        if self.buckets.len() != before {
            self.tokens = self
                .buckets
                .iter()
                .fold(0, |sum, b| sum.saturating_add(b.tokens));
            self.cost_usd = self.buckets.iter().map(|b| b.cost_usd).sum();
        }
    }
}

/// Whether the bucket starting at `start` has left the window at `now`: all of it is more than
/// [`WINDOW_SECONDS`] old.
fn expired(start: i64, now: i64) -> bool {
    start.saturating_add(BUCKET_SECONDS + WINDOW_SECONDS) <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = WINDOW_SECONDS;

    fn tokens(limit: u64) -> DailyBudget {
        DailyBudget {
            tokens_per_day: Some(limit),
            ..DailyBudget::default()
        }
    }

    #[test]
    fn a_call_counts_for_24_hours_and_leaves_with_its_bucket() {
        let mut window = Window::default();
        // Started at the very start of a bucket: counts until that bucket's span is a day old.
        window.add(0, 10, 0.5, 0);
        assert_eq!(window.used(DAY - 1), (10, 0.5));
        assert_eq!(window.used(DAY), (10, 0.5), "24 h after its start");
        assert_eq!(window.used(DAY + BUCKET_SECONDS - 1), (10, 0.5));
        assert_eq!(window.used(DAY + BUCKET_SECONDS), (0, 0.0));
        // Started at the end of a bucket: still at least 24 h.
        let mut window = Window::default();
        window.add(BUCKET_SECONDS - 1, 7, 0.0, BUCKET_SECONDS - 1);
        assert_eq!(window.used(BUCKET_SECONDS - 1 + DAY).0, 7);
        assert_eq!(window.used(BUCKET_SECONDS + DAY).0, 0);
    }

    #[test]
    fn older_buckets_leave_and_newer_ones_stay() {
        let mut window = Window::default();
        window.add(0, 1, 0.25, 0);
        window.add(3_600, 2, 0.5, 3_600);
        window.add(7_200, 4, 1.0, 7_200);
        assert_eq!(window.used(DAY + BUCKET_SECONDS), (6, 1.5));
        assert_eq!(window.used(DAY + 3_600 + BUCKET_SECONDS), (4, 1.0));
        assert_eq!(window.buckets.len(), 1);
    }

    #[test]
    fn the_call_reaching_the_limit_is_the_last_admitted() {
        let mut window = Window::default();
        window.add(100, 9, 0.0, 100);
        assert_eq!(window.admit(&tokens(10), 100), Ok(()), "9 of 10 used");
        window.add(100, 1, 0.0, 100);
        assert_eq!(
            window.admit(&tokens(10), 100),
            Err(Exceeded::TokensPerDay(10)),
            "exactly 10 of 10 used"
        );
        // Admitted again once that usage has left the window.
        assert_eq!(
            window.admit(&tokens(10), 100 + DAY + BUCKET_SECONDS),
            Ok(())
        );
        let dollars = DailyBudget {
            cost_usd_per_day: Some(2.0),
            ..DailyBudget::default()
        };
        window.add(200, 0, 2.0, 200);
        assert_eq!(window.admit(&dollars, 200), Err(Exceeded::CostPerDay(2.0)));
        assert_eq!(window.admit(&DailyBudget::default(), 200), Ok(()));
    }

    #[test]
    fn a_call_settling_late_counts_in_the_bucket_it_started_in() {
        let mut window = Window::default();
        window.add(2 * BUCKET_SECONDS, 5, 0.0, 2 * BUCKET_SECONDS);
        // Started in the first bucket, settled after a later one had calls.
        window.add(10, 3, 0.0, 2 * BUCKET_SECONDS + 1);
        let starts: Vec<i64> = window.buckets.iter().map(|b| b.start).collect();
        assert_eq!(starts, [0, 2 * BUCKET_SECONDS]);
        assert_eq!(window.used(DAY + BUCKET_SECONDS).0, 5);
        // A call whose bucket has already left is not counted.
        window.add(0, 100, 0.0, DAY + BUCKET_SECONDS);
        assert_eq!(window.used(DAY + BUCKET_SECONDS).0, 5);
    }

    #[test]
    fn the_window_holds_at_most_a_day_of_buckets() {
        let mut window = Window::default();
        for minute in 0..(3 * DAY / 60) {
            let now = minute * 60;
            window.add(now, 1, 0.0, now);
        }
        let bound = usize::try_from(WINDOW_SECONDS / BUCKET_SECONDS + 1).expect("fits");
        assert!(window.buckets.len() <= bound, "{}", window.buckets.len());
        // A call a minute: the last day and the bucket the window's edge cuts.
        let now = 3 * DAY - 60;
        let expected = u64::try_from((DAY + BUCKET_SECONDS) / 60).expect("fits");
        assert_eq!(window.used(now).0, expected);
    }
}
