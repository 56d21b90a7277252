//! What an Evaluation's run asks of admission: its [`Candidate`] (queue key and request) and
//! the [`Limits`] of its namespace. Pure.

use std::cmp::Reverse;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use crate::admission::{Candidate, QueueKey};
use crate::config::Config;
use crate::config::Limits;
use crate::crd::evaluation::EvaluationSpec;
use crate::crd::{Evaluation, EvaluationQuota};
use crate::labels::PRIORITY_ANNOTATION;
use crate::quantity;
use crate::run::request::Request;

/// What a run requests: its resources with the controller's defaults.
pub fn request(spec: &EvaluationSpec, config: &Config) -> Request {
    let r = spec.resources.clone().unwrap_or_default();
    let value = |q: Option<Quantity>, default: &Quantity| {
        q.as_ref()
            .and_then(quantity::value)
            .or_else(|| quantity::value(default))
            .unwrap_or(0.0)
    };
    Request {
        cpu: value(r.cpu, &config.default_cpu),
        memory: value(r.memory, &config.default_memory),
        gpu: f64::from(r.gpu.unwrap_or(0).max(0)),
    }
}

/// The candidate of `ev`'s run `run`; `None` for objects without namespace or uid.
pub fn candidate(ev: &Evaluation, run: &str, config: &Config) -> Option<Candidate> {
    let priority = ev
        .annotations()
        .get(PRIORITY_ANNOTATION)
        .and_then(|p| p.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let created = ev
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    Some(Candidate {
        namespace: ev.namespace()?,
        key: QueueKey {
            priority: Reverse(priority),
            created,
            name: ev.name_any(),
            uid: ev.uid()?,
        },
        run: run.to_string(),
        request: request(&ev.spec, config),
    })
}

/// The limits of a namespace: its EvaluationQuotas (the strictest of each figure when there
/// are several), or the controller default.
pub fn namespace_limits(quotas: &[&EvaluationQuota], config: &Config) -> Limits {
    if quotas.is_empty() {
        return Limits {
            max_running: Some(config.namespace_max_running),
            ..Default::default()
        };
    }
    let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    quotas.iter().fold(Limits::default(), |acc, q| {
        let hard = q.spec.hard.clone().unwrap_or_default();
        let mut invalid = acc.invalid.clone();
        // A figure that does not parse admits nothing (fail closed) and says so.
        let mut figure = |field: &str, value: Option<&Quantity>| {
            let value = value?;
            let parsed = quantity::value(value);
            if parsed.is_none() && invalid.is_none() {
                invalid = Some(format!(
                    "EvaluationQuota {}: spec.hard.{field} {:?} is not a quantity (such as 8, 500m, 16Gi)",
                    q.name_any(),
                    value.0
                ));
            }
            Some(parsed.unwrap_or(0.0))
        };
        let cpu = figure("cpu", hard.cpu.as_ref());
        let memory = figure("memory", hard.memory.as_ref());
        // The schema refuses these; a quota stored without it admits nothing (fail closed).
        let daily = hard.tokens_per_day.is_some_and(|t| t < 0)
            || hard
                .cost_usd_per_day
                .is_some_and(|c| !c.is_finite() || c < 0.0);
        if daily && invalid.is_none() {
            invalid = Some(format!(
                "EvaluationQuota {}: spec.hard.tokensPerDay and costUSDPerDay must not be negative",
                q.name_any()
            ));
        }
        Limits {
            max_running: match (acc.max_running, q.spec.max_running) {
                (Some(a), Some(b)) => Some(a.min(u32::try_from(b).unwrap_or(0))),
                (a, b) => a.or(b.map(|b| u32::try_from(b).unwrap_or(0))),
            },
            cpu: min(acc.cpu, cpu),
            memory: min(acc.memory, memory),
            gpu: min(acc.gpu, hard.gpu.map(f64::from)),
            paused: acc.paused || q.spec.paused == Some(true),
            invalid,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::quota::{EvaluationQuotaSpec, QuotaHard};

    fn quota(max_running: Option<i32>, cpu: Option<&str>, paused: bool) -> EvaluationQuota {
        EvaluationQuota::new(
            "q",
            EvaluationQuotaSpec {
                max_running,
                hard: Some(QuotaHard {
                    cpu: cpu.map(|c| Quantity(c.into())),
                    ..Default::default()
                }),
                paused: Some(paused),
            },
        )
    }

    #[test]
    fn namespaces_without_a_quota_get_the_controller_default() {
        let limits = namespace_limits(&[], &Config::default());
        assert_eq!(limits.max_running, Some(10));
        assert_eq!(limits.cpu, None);
    }

    #[test]
    fn several_quotas_combine_to_the_strictest() {
        let a = quota(Some(5), Some("8"), false);
        let b = quota(Some(3), None, true);
        let limits = namespace_limits(&[&a, &b], &Config::default());
        assert_eq!(limits.max_running, Some(3));
        assert_eq!(limits.cpu, Some(8.0));
        assert!(limits.paused);
    }

    #[test]
    fn an_unparseable_figure_admits_nothing_and_says_which() {
        let mut q = quota(Some(5), None, false);
        q.spec.hard = Some(QuotaHard {
            memory: Some(Quantity("16GB".into())),
            ..Default::default()
        });
        let limits = namespace_limits(&[&q], &Config::default());
        let why = limits.invalid.clone().expect("invalid");
        assert!(why.contains("spec.hard.memory \"16GB\""), "{why}");
        assert_eq!(limits.memory, Some(0.0));
        let mut ledger = crate::admission::Ledger::default();
        let ev = Evaluation::test();
        let c = candidate(&ev, "run", &Config::default()).expect("candidate");
        assert!(matches!(
            ledger.decide(&c, &limits, &Limits::default(), None),
            crate::admission::Decision::Wait { reason, .. } if reason.starts_with("QuotaInvalid: ")
        ));
    }

    #[test]
    fn a_negative_daily_model_budget_admits_nothing_and_a_valid_one_is_no_admission_limit() {
        let mut q = quota(None, None, false);
        q.spec.hard = Some(QuotaHard {
            tokens_per_day: Some(1_000),
            cost_usd_per_day: Some(5.0),
            ..Default::default()
        });
        assert_eq!(namespace_limits(&[&q], &Config::default()).invalid, None);
        for (tokens, cost) in [(Some(-1), None), (None, Some(-0.5)), (None, Some(f64::NAN))] {
            q.spec.hard = Some(QuotaHard {
                tokens_per_day: tokens,
                cost_usd_per_day: cost,
                ..Default::default()
            });
            let why = namespace_limits(&[&q], &Config::default()).invalid;
            assert!(
                why.as_deref().is_some_and(|w| w.contains("tokensPerDay")),
                "{why:?}"
            );
        }
    }

    #[test]
    fn requests_use_the_controller_defaults() {
        let ev = Evaluation::test();
        let r = request(&ev.spec, &Config::default());
        assert_eq!(
            (r.cpu, r.memory, r.gpu),
            (1.0, 512.0 * 1024.0 * 1024.0, 0.0)
        );
        let ev = ev.annotated(PRIORITY_ANNOTATION, "7");
        assert_eq!(
            candidate(&ev, "run", &Config::default()).map(|c| c.key.priority),
            Some(Reverse(7))
        );
    }
}
