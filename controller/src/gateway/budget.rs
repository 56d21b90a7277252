//! A run's budget and what it has spent. Pure.
//!
//! A call reserves before it is forwarded and settles with the provider's reported usage after.
//! The bound, per gateway process: `calls` is never exceeded, because a call in flight holds its
//! reservation; `tokens` and `costUSD` are only known afterwards, so a call is admitted while the
//! settled spend is below the limit, and the spend can exceed the limit by at most the usage of
//! the calls in flight when it is crossed.

use serde::{Deserialize, Serialize};

/// Limits of one run; an absent limit does not apply.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Most calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// Most tokens, input and output together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Most cost, in US dollars.
    #[serde(default, rename = "costUSD", skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// A namespace's limits per rolling 24 hours (`EvaluationQuota.spec.hard.tokensPerDay` and
/// `costUSDPerDay`, the strictest of its quotas when its run started); an absent limit does not
/// apply. Carried in each run's token, so the gateway needs no API call to know them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DailyBudget {
    /// Most tokens, input and output together, of the namespace's calls in any 24 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Most cost of the namespace's calls in any 24 hours, in US dollars.
    #[serde(
        default,
        rename = "costUSDPerDay",
        skip_serializing_if = "Option::is_none"
    )]
    pub cost_usd_per_day: Option<f64>,
}

impl DailyBudget {
    /// Whether no limit applies (then the gateway keeps no window for it).
    pub fn is_unlimited(&self) -> bool {
        self.tokens_per_day.is_none() && self.cost_usd_per_day.is_none()
    }
}

/// Tokens a provider reported for one call.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// Price of a model, per million tokens.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Dollars per million input tokens.
    pub input_per_m_tok: f64,
    /// Dollars per million output tokens.
    pub output_per_m_tok: f64,
}

impl Price {
    /// The cost of `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input_per_m_tok
            + usage.output_tokens as f64 * self.output_per_m_tok)
            / 1_000_000.0
    }
}

/// The limit a call would cross (on the wire to the controller: `{"calls": 2}`, `{"tokens": N}`
/// or `{"costUSD": X}`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub enum Exceeded {
    /// All calls are spent or in flight.
    #[error("the run's budget of {0} calls is spent")]
    Calls(u64),
    /// The tokens are spent.
    #[error("the run's budget of {0} tokens is spent")]
    Tokens(u64),
    /// The money is spent.
    #[error("the run's budget of {0} USD is spent")]
    #[serde(rename = "costUSD")]
    Cost(f64),
    /// The namespace's tokens of the last 24 hours are spent.
    #[error(
        "the namespace's budget of {0} tokens per day (EvaluationQuota spec.hard.tokensPerDay) is spent"
    )]
    TokensPerDay(u64),
    /// The namespace's money of the last 24 hours is spent.
    #[error(
        "the namespace's budget of {0} USD per day (EvaluationQuota spec.hard.costUSDPerDay) is spent"
    )]
    #[serde(rename = "costUSDPerDay")]
    CostPerDay(f64),
}

/// What one run has spent, settled calls only; the ledger carries it on every record, so a
/// restarted gateway takes it up from the run's last record.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spent {
    /// Calls.
    pub calls: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost, in US dollars.
    #[serde(rename = "costUSD")]
    pub cost_usd: f64,
}

impl Spent {
    /// Adds one call with `usage` costing `cost`.
    pub fn add(&mut self, usage: &Usage, cost: f64) {
        self.calls += 1;
        self.input_tokens += usage.input_tokens;
        self.output_tokens += usage.output_tokens;
        self.cost_usd += cost;
    }
}

/// What one run has spent and has in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Account {
    /// Settled.
    pub spent: Spent,
    /// Calls reserved and not yet settled.
    pub in_flight: u64,
    /// The first limit a call of the run was refused for: the run then ends `BudgetExceeded`.
    pub refused: Option<Exceeded>,
}

impl Account {
    /// An account that has already spent `spent` (taken up from the ledger).
    pub fn resume(spent: Spent) -> Self {
        Self {
            spent,
            ..Self::default()
        }
    }

    /// Reserves one call under `budget`, or names the limit it would cross (and remembers the
    /// first such refusal).
    pub fn reserve(&mut self, budget: &Budget) -> Result<(), Exceeded> {
        let reserved = self.try_reserve(budget);
        if let Err(exceeded) = reserved {
            self.refuse(exceeded);
        }
        reserved
    }

    /// Remembers that a call of the run was refused for `exceeded`, unless one was before.
    pub fn refuse(&mut self, exceeded: Exceeded) {
        self.refused.get_or_insert(exceeded);
    }

    fn try_reserve(&mut self, budget: &Budget) -> Result<(), Exceeded> {
        let spent = &self.spent;
        if let Some(limit) = budget.calls
            && spent.calls + self.in_flight >= limit
        {
            return Err(Exceeded::Calls(limit));
        }
        if let Some(limit) = budget.tokens
            && spent.input_tokens + spent.output_tokens >= limit
        {
            return Err(Exceeded::Tokens(limit));
        }
        if let Some(limit) = budget.cost_usd
            && spent.cost_usd >= limit
        {
            return Err(Exceeded::Cost(limit));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Settles a reserved call: it counts as a call whatever its outcome (it was forwarded), with
    /// the usage the provider reported (none: no tokens) at `price`.
    pub fn settle(&mut self, usage: &Usage, price: &Price) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.spent.add(usage, price.cost(usage));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREE: Price = Price {
        input_per_m_tok: 0.0,
        output_per_m_tok: 0.0,
    };

    #[test]
    fn a_budget_of_n_calls_allows_exactly_n() {
        let budget = Budget {
            calls: Some(3),
            ..Budget::default()
        };
        let mut account = Account::default();
        let mut allowed = 0;
        for _ in 0..10 {
            if account.reserve(&budget).is_ok() {
                allowed += 1;
                account.settle(&Usage::default(), &FREE);
            }
        }
        assert_eq!(allowed, 3);
        assert_eq!(account.reserve(&budget), Err(Exceeded::Calls(3)));
        assert_eq!(account.refused, Some(Exceeded::Calls(3)));
    }

    #[test]
    fn an_account_remembers_its_first_refusal_only_once_refused() {
        let mut account = Account::default();
        let calls = Budget {
            calls: Some(1),
            ..Budget::default()
        };
        account.reserve(&calls).expect("the first call");
        account.settle(&Usage::default(), &FREE);
        assert_eq!(account.refused, None, "a budget used up is not a refusal");
        assert!(account.reserve(&calls).is_err());
        let cost = Budget {
            cost_usd: Some(0.0),
            ..Budget::default()
        };
        assert!(account.reserve(&cost).is_err());
        assert_eq!(account.refused, Some(Exceeded::Calls(1)));
        // On the wire to the controller, each limit under the spec's name.
        let wire = |e: Exceeded| serde_json::to_string(&e).expect("json");
        assert_eq!(wire(Exceeded::Calls(2)), r#"{"calls":2}"#);
        assert_eq!(wire(Exceeded::Cost(1.5)), r#"{"costUSD":1.5}"#);
    }

    #[test]
    fn calls_in_flight_hold_their_reservation() {
        // Ten concurrent calls against a budget of four: four are in flight, the rest refused;
        // settling one does not free a slot (it was spent), so the total stays four.
        let budget = Budget {
            calls: Some(4),
            ..Budget::default()
        };
        let mut account = Account::default();
        let admitted = (0..10).filter(|_| account.reserve(&budget).is_ok()).count();
        assert_eq!((admitted, account.in_flight), (4, 4));
        account.settle(&Usage::default(), &FREE);
        assert!(account.reserve(&budget).is_err());
        assert_eq!((account.spent.calls, account.in_flight), (1, 3));
    }

    #[test]
    fn tokens_and_cost_refuse_once_spent_and_overspend_only_by_calls_in_flight() {
        let price = Price {
            input_per_m_tok: 1_000_000.0,
            output_per_m_tok: 0.0,
        };
        let usage = Usage {
            input_tokens: 6,
            output_tokens: 4,
        };
        let budget = Budget {
            tokens: Some(15),
            ..Budget::default()
        };
        let mut account = Account::default();
        // Two calls admitted concurrently while nothing is settled.
        account.reserve(&budget).expect("first");
        account.reserve(&budget).expect("second");
        account.settle(&usage, &price);
        account.settle(&usage, &price);
        // 20 tokens spent against 15: over by what the second call in flight used, no more.
        assert_eq!(account.spent.input_tokens + account.spent.output_tokens, 20);
        assert_eq!(account.reserve(&budget), Err(Exceeded::Tokens(15)));
        assert_eq!(account.spent.cost_usd, 12.0);
        let dollars = Budget {
            cost_usd: Some(12.0),
            ..Budget::default()
        };
        assert_eq!(account.reserve(&dollars), Err(Exceeded::Cost(12.0)));
    }

    #[test]
    fn an_empty_budget_limits_nothing() {
        let mut account = Account::default();
        assert!((0..1_000).all(|_| account.reserve(&Budget::default()).is_ok()));
    }
}
