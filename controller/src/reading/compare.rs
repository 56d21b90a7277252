//! `crucible compare A B`: two runs' samples reduced per id (epochs averaged) and the paired
//! difference A − B over the ids both have, beside each run's own estimate and the unpaired
//! interval for contrast. The statistics are `samples::stats`'; this only arranges them. Pure.

use crate::crd::samples::Interval;
use crate::crd::shown_number;
use crate::samples::protocol::Aggregates;
use crate::samples::stats::{self, Estimate};
use crate::table::pad;

/// A comparison of run A with run B.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// A's estimate over its ids.
    pub a: Option<Estimate>,
    /// B's estimate over its ids.
    pub b: Option<Estimate>,
    /// A − B paired by id over the ids both have.
    pub paired: Option<Estimate>,
    /// A − B as if the runs were independent.
    pub unpaired: Option<Estimate>,
    /// Ids only A has.
    pub only_a: usize,
    /// Ids only B has.
    pub only_b: usize,
}

/// Compares the samples of A with those of B.
pub fn compare(a: &Aggregates, b: &Aggregates) -> Comparison {
    let (ma, mb) = (stats::id_means(a), stats::id_means(b));
    let ea = stats::estimate(ma.values().copied().collect());
    let eb = stats::estimate(mb.values().copied().collect());
    Comparison {
        a: ea,
        b: eb,
        paired: stats::paired(&ma, &mb),
        unpaired: ea.zip(eb).and_then(|(x, y)| stats::unpaired(&x, &y)),
        only_a: ma.keys().filter(|k| !mb.contains_key(*k)).count(),
        only_b: mb.keys().filter(|k| !ma.contains_key(*k)).count(),
    }
}

fn interval(ci: Option<Interval>) -> String {
    ci.map(|ci| format!("[{}, {}]", shown_number(ci.low), shown_number(ci.high)))
        .unwrap_or_else(|| "-".into())
}

fn row(what: String, e: Option<&Estimate>) -> Vec<String> {
    match e {
        Some(e) => vec![
            what,
            e.n.to_string(),
            shown_number(e.mean),
            e.stderr.map(shown_number).unwrap_or_else(|| "-".into()),
            interval(e.ci95),
        ],
        None => vec![what, "0".into(), "-".into(), "-".into(), "-".into()],
    }
}

/// The comparison as a table; `a` and `b` name the runs.
pub fn render(a: &str, b: &str, c: &Comparison) -> String {
    let rows = vec![
        ["", "IDS", "MEAN", "STDERR", "95% INTERVAL"]
            .map(String::from)
            .to_vec(),
        row(format!("A {a}"), c.a.as_ref()),
        row(format!("B {b}"), c.b.as_ref()),
        row("A − B paired".into(), c.paired.as_ref()),
        // Its n is both runs' ids, which the IDS column would misread as pairs.
        {
            let mut r = row("A − B unpaired".into(), c.unpaired.as_ref());
            r[1] = String::new();
            r
        },
    ];
    format!(
        "{}paired over the {} ids both runs have; ids only in A: {}, only in B: {}\n",
        pad(&rows),
        c.paired.map_or(0, |p| p.n),
        c.only_a,
        c.only_b
    )
}
