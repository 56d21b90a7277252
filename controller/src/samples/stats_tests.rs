use super::*;
use crate::samples::protocol::{Limits, Validator, id_key};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn means(values: &[f64]) -> HashMap<IdKey, f64> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (id_key(&format!("item-{i}")), *v))
        .collect()
}

#[test]
fn t_quantiles_match_published_tables() {
    // Tables (and scipy.stats.t.ppf(0.975, df)) give these; the expansion covers df > 30.
    for (df, t) in [
        (1, 12.706204736),
        (9, 2.262157163),
        (30, 2.042272456),
        (31, 2.039513446),
        (40, 2.021075390),
        (60, 2.000297822),
        (100, 1.983971519),
        (1000, 1.962339081),
    ] {
        assert!((t975(df) - t).abs() < 1e-7, "df {df}: {} vs {t}", t975(df));
    }
}

#[test]
fn a_fixed_data_set_has_its_known_mean_stderr_and_interval() {
    let values = vec![0.9, 0.7, 0.8, 1.0, 0.6, 0.75, 0.85, 0.95, 0.65, 0.8];
    // python3: import statistics as s, math; v=[…]; m=s.mean(v); se=s.stdev(v)/math.sqrt(10);
    // print(m, se, m-2.262157163*se, m+2.262157163*se)
    // -> 0.8 0.040824829046386304 0.7076478205444668 0.8923521794555332
    let e = estimate(values.clone()).expect("values");
    assert_eq!(e.n, 10);
    assert!(close(e.mean, 0.8), "{e:?}");
    assert!(
        close(e.stderr.expect("stderr"), 0.040824829046386304),
        "{e:?}"
    );
    let ci = e.ci95.expect("interval");
    assert!(
        close(ci.low, 0.7076478205444668) && close(ci.high, 0.8923521794555332),
        "{ci:?}"
    );
    // Order does not change a bit.
    let mut reversed = values;
    reversed.reverse();
    assert_eq!(estimate(reversed), Some(e));
    assert_eq!(
        over_cases(&[0.9, 0.7, 0.8, 1.0, 0.6, 0.75, 0.85, 0.95, 0.65, 0.8]),
        Some(e)
    );
}

#[test]
fn one_value_has_a_mean_and_no_interval_and_none_has_nothing() {
    let one = estimate(vec![0.5]).expect("one value");
    assert_eq!((one.mean, one.stderr, one.ci95), (0.5, None, None));
    assert_eq!(estimate(Vec::new()), None);
}

#[test]
fn epochs_are_reduced_per_id_before_the_mean() {
    // Item a: 1, 1, 1 (mean 1); item b: 0 (mean 0). Over records the mean would be 0.75;
    // over ids it is 0.5, with stderr sd([1, 0]) / sqrt(2) = 0.5.
    let text = "{\"id\":\"a\",\"epoch\":0,\"score\":1}\n{\"id\":\"a\",\"epoch\":1,\"score\":1}\n\
                {\"id\":\"a\",\"epoch\":2,\"score\":1}\n{\"id\":\"b\",\"epoch\":0,\"score\":0}\n";
    let mut v = Validator::new(Limits::default(), 3, 0.5);
    v.push(text.as_bytes()).expect("valid");
    let s = summarize(&v.finish().expect("valid")).expect("samples");
    assert_eq!((s.count, s.ids, s.passed), (4, 2, 3));
    assert!(
        close(s.mean, 0.5) && close(s.stderr.expect("stderr"), 0.5),
        "{s:?}"
    );
    // t(0.975, 1) = 12.706204736
    let ci = s.ci95.expect("interval");
    assert!(
        (ci.high - (0.5 + 12.706204736 * 0.5)).abs() < 1e-9,
        "{ci:?}"
    );
}

#[test]
fn pairing_finds_a_difference_the_unpaired_interval_misses() {
    // Items of very different difficulty; the new run is better on each by about 0.05.
    let baseline = [0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0];
    let lift = [0.05, 0.07, 0.04, 0.06, 0.05, 0.03, 0.06, 0.05, 0.04, 0.05];
    let this: Vec<f64> = baseline.iter().zip(lift).map(|(b, d)| b + d).collect();

    // Unpaired: difference of means ± t(0.975, 18) · sqrt(se_a² + se_b²); python3 (statistics):
    // 0.05 ± 2.100922040 · 0.13659347633682137 -> (-0.237, 0.337): includes 0.
    let (a, b) = (
        estimate(this.clone()).expect("a"),
        estimate(baseline.to_vec()).expect("b"),
    );
    let se = a.stderr.expect("se").hypot(b.stderr.expect("se"));
    assert!(close(se, 0.13659347633682137), "{se}");
    let diff = a.mean - b.mean;
    assert!(diff - t975(18) * se < 0.0 && diff + t975(18) * se > 0.0);

    // Paired: python3: d=[a-b …]; m=s.mean(d); se=s.stdev(d)/math.sqrt(10)
    // -> 0.05 0.0036514837167011035 (0.04173976995468674, 0.05826023004531328): excludes 0.
    let p = paired(&means(&this), &means(&baseline)).expect("pairs");
    assert_eq!(p.n, 10);
    assert!(close(p.mean, 0.05) && close(p.stderr.expect("se"), 0.0036514837167011035));
    let ci = p.ci95.expect("interval");
    assert!(close(ci.low, 0.04173976995468674) && close(ci.high, 0.05826023004531328));
    assert!(ci.low > 0.0);
}

#[test]
fn only_ids_in_both_runs_are_paired() {
    let mut this = means(&[1.0, 1.0, 1.0]);
    this.insert(id_key("only-here"), 0.0);
    let baseline = means(&[0.5, 0.5]);
    let p = paired(&this, &baseline).expect("pairs");
    assert_eq!((p.n, p.mean), (2, 0.5));
    assert_eq!(paired(&means(&[1.0]), &HashMap::new()), None);
}

#[test]
fn the_unpaired_interval_is_welchs() {
    // python3: import statistics as s, math; a=[0.9,0.7,0.8,1.0,0.6]; b=[0.5,0.6,0.4,0.7,0.3,0.55]
    // va=s.variance(a)/5; vb=s.variance(b)/6; d=s.mean(a)-s.mean(b); se=math.sqrt(va+vb)
    // df=(va+vb)**2/(va**2/4+vb**2/5) -> 8.24, so t(0.975, 8) = 2.306004135 (tables)
    // -> d 0.29166666666666674, se 0.09166666666666667, d ± t·se 0.08028295429166674 0.5030503790416667
    let a = estimate(vec![0.9, 0.7, 0.8, 1.0, 0.6]).expect("a");
    let b = estimate(vec![0.5, 0.6, 0.4, 0.7, 0.3, 0.55]).expect("b");
    let u = unpaired(&a, &b).expect("both have a stderr");
    assert!(close(u.mean, 0.29166666666666674), "{u:?}");
    assert!(
        close(u.stderr.expect("stderr"), 0.09166666666666667),
        "{u:?}"
    );
    let ci = u.ci95.expect("interval");
    assert!(
        (ci.low - 0.08028295429166674).abs() < 1e-9 && (ci.high - 0.5030503790416667).abs() < 1e-9,
        "{ci:?}"
    );
    let one = estimate(vec![0.5]).expect("one");
    assert_eq!(unpaired(&a, &one), None, "no stderr, no interval");
}
