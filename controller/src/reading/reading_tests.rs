use http::Method;

use super::select::{Footer, Format, Worst};
use super::*;
use crate::crd::EvaluationStatus;
use crate::crd::samples::SamplesStatus;
use crate::fixtures::ApiServerVerifier;
use crate::store::BundleKey;

/// The lines of a small run: scores out of order, a tie, an id with a terminal escape.
const LINES: &str = r#"{"id":"b","epoch":0,"score":1,"output":"42"}
{"id":"a","epoch":1,"score":0,"output":"43\u001b[31m red","passed":false}
{"id":"a","epoch":0,"score":0,"message":"wrong sum"}
{"id":"c","epoch":0,"score":0.5,"passed":true}
{"id":"b","epoch":1,"score":0.25}
"#;

fn validate(text: &str, limit: usize, failed: bool) -> (Vec<select::Sample>, u64, Aggregates) {
    let mut worst = Worst::new(limit, failed);
    let mut v = Validator::reading(Limits::default(), 0.5);
    v.push_with(text.as_bytes(), &mut |l| worst.offer(l))
        .expect("valid");
    let aggregates = v.finish_with(&mut |l| worst.offer(l)).expect("valid");
    let (kept, matched) = worst.finish().expect("within budget");
    (kept, matched, aggregates)
}

fn ids(kept: &[select::Sample]) -> Vec<(String, u32)> {
    kept.iter().map(|s| (s.id.clone(), s.epoch)).collect()
}

fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    list.iter().map(|(i, e)| (i.to_string(), *e)).collect()
}

#[test]
fn samples_come_worst_first_ties_by_id_then_epoch() {
    let (kept, matched, _) = validate(LINES, 50, false);
    assert_eq!(matched, 5);
    assert_eq!(
        ids(&kept),
        pairs(&[("a", 0), ("a", 1), ("b", 1), ("c", 0), ("b", 0)])
    );
    // The limit keeps the worst, whatever order they came in.
    let (kept, matched, _) = validate(LINES, 2, false);
    assert_eq!((ids(&kept), matched), (pairs(&[("a", 0), ("a", 1)]), 5));
}

#[test]
fn failed_keeps_only_samples_that_did_not_pass() {
    // b/1 scored 0.25 with no `passed`: below the 0.5 threshold, so failed; c passed at 0.5.
    let (kept, matched, _) = validate(LINES, 50, true);
    assert_eq!(matched, 3);
    assert_eq!(ids(&kept), pairs(&[("a", 0), ("a", 1), ("b", 1)]));
}

#[test]
fn a_limit_whose_lines_exceed_the_budget_is_refused() {
    let big = "x".repeat(400 * 1024);
    let text: String = (0..200)
        .map(|i| format!("{{\"id\":\"s{i}\",\"score\":0,\"notes\":\"{big}\"}}\n"))
        .collect();
    let mut worst = Worst::new(1000, false);
    let mut v = Validator::reading(Limits::default(), 0.5);
    v.push_with(text.as_bytes(), &mut |l| worst.offer(l))
        .expect("valid");
    let e = worst.finish().expect_err("80 MB of lines");
    assert!(e.contains("use a smaller --limit"), "{e}");
}

fn footer<'a>(stats: Option<&'a SamplesStatus>) -> Footer<'a> {
    Footer {
        matched: 5,
        failed_only: false,
        stats,
        digest: "sha256:abc",
    }
}

#[test]
fn the_table_shows_id_epoch_score_passed_and_a_safe_excerpt() {
    let (kept, _, aggregates) = validate(LINES, 3, false);
    let stats = stats::summarize(&aggregates);
    let out = select::render(&kept, Format::Table, &footer(stats.as_ref())).expect("table");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "EPOCH", "SCORE", "PASSED", "MESSAGE"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["a", "0", "0", "false", "wrong", "sum"]
    );
    // The escape character is not printed to the terminal.
    assert!(lines[2].contains("43\u{FFFD}[31m red"), "{}", lines[2]);
    assert!(!out.contains('\u{1b}'));
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["b", "1", "0.25", "false"]
    );
    // Ids a (0), b (0.625), c (0.5): mean 0.375 over 3 ids, 5 samples, 2 passed.
    assert_eq!(
        lines[4],
        "3 of 5 samples, worst first; bundle: 5 samples, 2 passed, mean 0.375 ±0.822 (3 ids); \
         sha256:abc"
    );
}

#[test]
fn json_is_an_array_of_the_records_and_jsonl_the_stored_lines() {
    let (kept, _, _) = validate(LINES, 2, false);
    let json = select::render(&kept, Format::Json, &footer(None)).expect("json");
    let values: Vec<serde_json::Value> = serde_json::from_str(&json).expect("an array");
    assert_eq!(values.len(), 2);
    assert_eq!(values[0]["message"], "wrong sum");
    assert_eq!(values[1]["output"], "43\u{1b}[31m red", "kept as stored");
    let jsonl = select::render(&kept, Format::Jsonl, &footer(None)).expect("jsonl");
    let stored: Vec<&str> = LINES.lines().collect();
    assert_eq!(jsonl, format!("{}\n{}\n", stored[2], stored[1]));
}

fn aggregates(text: &str) -> Aggregates {
    validate(text, 0, false).2
}

/// Per id over two epochs: A {a 1, b .5, c 0, d 1, e .5}, B {a .5, b 0, c 0, d .5, f 1}.
const A: &str = r#"{"id":"a","epoch":0,"score":1}
{"id":"a","epoch":1,"score":1}
{"id":"b","epoch":0,"score":1}
{"id":"b","epoch":1,"score":0}
{"id":"c","epoch":0,"score":0}
{"id":"c","epoch":1,"score":0}
{"id":"d","epoch":0,"score":1}
{"id":"d","epoch":1,"score":1}
{"id":"e","epoch":0,"score":0.5}
{"id":"e","epoch":1,"score":0.5}
"#;
const B: &str = r#"{"id":"a","epoch":0,"score":1}
{"id":"a","epoch":1,"score":0}
{"id":"b","epoch":0,"score":0}
{"id":"b","epoch":1,"score":0}
{"id":"c","epoch":0,"score":0}
{"id":"c","epoch":1,"score":0}
{"id":"d","epoch":0,"score":1}
{"id":"d","epoch":1,"score":0}
{"id":"f","epoch":0,"score":1}
{"id":"f","epoch":1,"score":1}
"#;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn compare_pairs_by_id_after_averaging_epochs() {
    // python3: import statistics as s, math; d=[1-.5, .5-0, 0-0, 1-.5] (ids a-d);
    // m=s.mean(d); se=s.stdev(d)/2; t(0.975, 3)=3.182446305
    // -> 4 pairs, 0.375, 0.125, interval -0.022805788125 0.772805788125
    // unpaired: mean(A ids)=0.6, mean(B ids)=0.4, se √(seA²+seB²)=0.264575131106459
    let c = compare::compare(&aggregates(A), &aggregates(B));
    let p = c.paired.expect("pairs");
    assert_eq!(p.n, 4);
    assert!(
        close(p.mean, 0.375) && close(p.stderr.expect("se"), 0.125),
        "{p:?}"
    );
    let ci = p.ci95.expect("interval");
    assert!(
        close(ci.low, -0.022805788125) && close(ci.high, 0.772805788125),
        "{ci:?}"
    );
    let u = c.unpaired.expect("unpaired");
    assert!(close(u.mean, 0.2) && close(u.stderr.expect("se"), 0.264575131106459));
    assert_eq!((c.only_a, c.only_b), (1, 1));
    assert!(close(c.a.expect("a").mean, 0.6) && close(c.b.expect("b").mean, 0.4));
    let out = compare::render("v2", "v1", &c);
    let paired_row = out
        .lines()
        .find(|l| l.starts_with("A − B paired"))
        .expect("paired row");
    assert_eq!(
        paired_row.split_whitespace().collect::<Vec<_>>(),
        [
            "A", "−", "B", "paired", "4", "0.375", "0.125", "[-0.023,", "0.773]"
        ]
    );
    assert!(
        out.ends_with("paired over the 4 ids both runs have; ids only in A: 1, only in B: 1\n"),
        "{out}"
    );
}

#[test]
fn bundle_urls_split_into_store_and_object() {
    assert_eq!(
        split_last("s3://bucket/pre/ns/ev/run/samples.jsonl.zst", 4),
        Some((
            "s3://bucket/pre".to_string(),
            "ns/ev/run/samples.jsonl.zst".to_string()
        ))
    );
    assert_eq!(
        split_last("file:///r/ns/ev/run/samples.jsonl.zst", 1),
        Some((
            "file:///r/ns/ev/run".to_string(),
            "samples.jsonl.zst".to_string()
        ))
    );
    assert_eq!(split_last("s3://bucket", 1), None);
    assert_eq!(split_last("s3://bucket/x.zst", 4), None);
    assert_eq!(split_last("/no/scheme", 1), None);
    let local = bundle_at("r/default/ev/run/samples.jsonl.zst").expect("a path");
    assert!(local.store.starts_with("file:///") && local.store.ends_with("/r/default/ev/run"));
    assert_eq!(
        (local.object.as_str(), local.digest),
        ("samples.jsonl.zst", None)
    );
}

const KEY: BundleKey<'static> = BundleKey {
    namespace: "default",
    evaluation: "arith",
    run_id: "r1",
};

fn dir_url(path: &std::path::Path) -> String {
    url::Url::from_directory_path(path)
        .expect("absolute")
        .to_string()
}

/// Stores `LINES` as run r1 of default/arith in a `file://` store under `dir`.
async fn stored(dir: &std::path::Path) -> crate::store::Stored {
    let store = Store::open(&dir_url(&dir.join("store"))).expect("store");
    store
        .put_samples(
            &KEY,
            LINES.as_bytes(),
            Validator::new(Limits::default(), 2, 0.5),
        )
        .await
        .expect("stored")
}

fn evaluation_with(samples: SamplesStatus) -> Evaluation {
    let mut ev = Evaluation::test().with_status(EvaluationStatus {
        samples: Some(samples),
        ..Default::default()
    });
    ev.metadata.name = Some("arith".into());
    ev.metadata.namespace = Some("default".into());
    ev
}

#[tokio::test]
async fn a_stored_bundle_reads_back_and_a_changed_one_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = stored(dir.path()).await;
    let samples = SamplesStatus {
        uri: Some(s.uri.clone()),
        digest: Some(s.digest.clone()),
        ..Default::default()
    };
    let ev = evaluation_with(samples.clone());

    let bundle = bundle_of(&ev, None).expect("a bundle");
    let mut seen = Vec::new();
    let (agg, digest) = read(&bundle, &mut |l| seen.push(l.id.to_string()))
        .await
        .expect("the digest matches");
    assert_eq!((agg.records, digest.as_str()), (5, s.digest.as_str()));
    assert_eq!(
        seen,
        ["b", "a", "a", "c", "b"],
        "every line, in stored order"
    );

    // --store: the same path under another root (a copy of the store).
    let copy = dir.path().join("copy");
    let run = "default/arith/r1";
    std::fs::create_dir_all(copy.join(run)).expect("mkdir");
    let file = format!("{run}/samples.jsonl.zst");
    std::fs::copy(dir.path().join("store").join(&file), copy.join(&file)).expect("copy");
    let moved = bundle_of(&ev, Some(&dir_url(&copy))).expect("a bundle");
    assert!(read(&moved, &mut |_| {}).await.is_ok());

    // --bundle: the file itself, no digest to check.
    let direct = bundle_at(&copy.join(&file).display().to_string()).expect("path");
    let (_, digest) = read(&direct, &mut |_| {}).await.expect("readable");
    assert_eq!(digest, s.digest);

    // The stored bytes replaced by another valid bundle: the digest no longer matches.
    let other = zstd::encode_all(&b"{\"id\":\"a\",\"score\":1}\n"[..], 3).expect("zstd");
    std::fs::write(copy.join(&file), other).expect("replace");
    let e = read(&moved, &mut |_| {}).await.expect_err("changed");
    assert!(
        e.contains("digest is sha256:") && e.contains(&format!("status records {}", s.digest)),
        "{e}"
    );

    // A store directory that does not exist is an error, not a new empty store.
    let missing = bundle_of(&ev, Some(&dir_url(&dir.path().join("nowhere")))).expect("bundle");
    let e = read(&missing, &mut |_| {}).await.expect_err("missing");
    assert!(e.contains("is not a directory"), "{e}");
    assert!(!dir.path().join("nowhere").exists());

    let none = evaluation_with(SamplesStatus {
        uri: None,
        ..samples
    });
    let e = bundle_of(&none, None).expect_err("not stored");
    assert!(e.contains("no uri and digest"), "{e}");
}

#[tokio::test]
async fn samples_reads_the_evaluation_with_the_callers_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = stored(dir.path()).await;
    let ev = evaluation_with(SamplesStatus {
        uri: Some(s.uri.clone()),
        digest: Some(s.digest.clone()),
        count: 5,
        ..Default::default()
    });
    let (client, mut server) = ApiServerVerifier::client();
    let args = SamplesArgs {
        name: Some("arith".into()),
        namespace: None,
        failed: true,
        output: Format::Jsonl,
        limit: 1,
        store: None,
        bundle: None,
    };
    let task = tokio::spawn(async move { samples(&args, Some(&client)).await });
    server
        .expect(
            Method::GET,
            "/apis/crucible.dev/v1alpha1/namespaces/default/evaluations/arith",
            200,
            serde_json::to_value(&ev).expect("json"),
        )
        .await;
    let out = task.await.expect("task").expect("printed");
    assert_eq!(out, format!("{}\n", LINES.lines().nth(2).expect("a/0")));
}

#[test]
fn the_commands_take_a_name_or_a_bundle() {
    use crate::cli::{Cli, Command};
    use clap::Parser;
    assert!(Cli::try_parse_from(["crucible", "samples"]).is_err());
    assert!(Cli::try_parse_from(["crucible", "samples", "x", "--bundle", "b"]).is_err());
    assert!(Cli::try_parse_from(["crucible", "samples", "--bundle", "b", "--store", "s"]).is_err());
    assert!(Cli::try_parse_from(["crucible", "samples", "x", "--limit", "0"]).is_err());
    let Command::Samples(args) =
        Cli::parse_from(["crucible", "samples", "x", "-n", "team", "-o", "json"]).command
    else {
        panic!("samples subcommand expected")
    };
    assert_eq!((args.limit, args.output), (50, Format::Json));
    assert!(Cli::try_parse_from(["crucible", "compare", "a"]).is_err());
    assert!(
        Cli::try_parse_from(["crucible", "compare", "a", "b", "--bundles", "--store", "s"])
            .is_err()
    );
}

/// A baseline's bundle is read at its path in the controller's own store, and only within the
/// run's namespace: a status written by hand to name another namespace's bundle is refused.
#[test]
fn a_baseline_bundle_is_taken_from_the_store_and_only_in_the_namespace() {
    let uri = "s3://elsewhere/prefix/team-a/arith/run-1/samples.jsonl.zst";
    let bundle = super::bundle_in(
        "file:///results/",
        "team-a",
        "b".into(),
        uri,
        "sha256:d",
        0.5,
    )
    .expect("a bundle of team-a");
    assert_eq!(bundle.store, "file:///results");
    assert_eq!(bundle.object, "team-a/arith/run-1/samples.jsonl.zst");
    assert_eq!(bundle.digest.as_deref(), Some("sha256:d"));
    assert_eq!(super::run_id_of(&bundle), Some("run-1"));
    let other = "file:///results/team-b/arith/run-1/samples.jsonl.zst";
    let refused = super::bundle_in(
        "file:///results",
        "team-a",
        "b".into(),
        other,
        "sha256:d",
        0.5,
    );
    assert!(refused.is_err_and(|e| e.contains("not a bundle of namespace team-a")));
    assert!(
        super::bundle_in(
            "file:///results",
            "team-a",
            "b".into(),
            "file:///x.zst",
            "d",
            0.5
        )
        .is_err()
    );
}
