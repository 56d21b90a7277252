//! `crucible calls NAME`: one run's calls, read from the ledger the gateway wrote and verified
//! while read. A ledger is read twice, line by line: first to verify the whole chain (so a
//! broken ledger prints nothing but where it breaks), then to print exactly the bytes verified
//! (a gateway may be appending meanwhile). Memory is one record, at most
//! [`MAX_LINE_BYTES`], whatever the ledger's length.

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use kube::{Api, Client};

use super::ledger::{Broken, DirSink, Head, MAX_LINE_BYTES, Record};
use crate::crd::Evaluation;

/// Longest wait for the API server's answer when looking up the run id.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `crucible calls`.
#[derive(Args, Debug)]
pub struct CallsArgs {
    /// The Evaluation.
    pub name: String,
    /// Its namespace (default: the kubeconfig's; `default` with `--run`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The gateway's ledger directory (its `--ledger-dir`).
    #[arg(long, env = "CRUCIBLE_GATEWAY_LEDGER_DIR")]
    pub ledger: PathBuf,
    /// The run to list, without asking the cluster (default: the Evaluation's `status.runId`).
    #[arg(long)]
    pub run: Option<String>,
    /// What to print.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Output format of `crucible calls`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// One line per call, then the totals and the ledger's digest; no bodies.
    Table,
    /// One object: the run, its records (bodies included when recorded), totals and digest.
    Json,
    /// One record per line, without bodies.
    Jsonl,
}

/// The run whose calls are listed: every record must name it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRef {
    /// Namespace of the Evaluation.
    pub namespace: String,
    /// Name of the Evaluation.
    pub evaluation: String,
    /// Run id (`status.runId`).
    pub run: String,
}

/// Why a ledger cannot be listed. Record numbers count from 0, as `seq` does; nothing of a
/// record's content is quoted.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// No ledger file for the run.
    #[error(
        "no calls recorded for run {run} of {namespace}/{evaluation}: {path} does not exist (the run made no model calls, or the gateway writes its ledgers elsewhere)"
    )]
    Missing {
        /// Namespace.
        namespace: String,
        /// Evaluation.
        evaluation: String,
        /// Run id.
        run: String,
        /// Where the ledger would be.
        path: String,
    },
    /// The chain does not verify.
    #[error("{0}; nothing is listed")]
    Broken(#[from] Broken),
    /// A line that is not a record.
    #[error(
        "the call ledger breaks at record {seq}: not a ledger record ({why}, column {column}); nothing is listed"
    )]
    NotARecord {
        /// Its number.
        seq: u64,
        /// What kind of JSON error.
        why: String,
        /// Where in the line.
        column: usize,
    },
    /// A line longer than any the gateway writes.
    #[error(
        "the call ledger breaks at record {seq}: longer than {MAX_LINE_BYTES} bytes; nothing is listed"
    )]
    TooLong {
        /// Its number.
        seq: u64,
    },
    /// The file ends inside a line.
    #[error(
        "the call ledger ends inside record {seq} (a gateway stopped while writing it, or is writing it now: list again); nothing is listed"
    )]
    Incomplete {
        /// Its number.
        seq: u64,
    },
    /// A record of another run.
    #[error(
        "the call ledger breaks at record {seq}: it is a record of another run; nothing is listed"
    )]
    Foreign {
        /// Its number.
        seq: u64,
    },
    /// The ledger changed between verifying and printing (rewritten, not appended).
    #[error("the call ledger changed while it was read; nothing more is listed")]
    Changed,
    /// Reading the ledger or writing the listing.
    #[error("{0}")]
    Io(String),
}

/// The run's current id, from its Evaluation's status.
pub async fn run_id(client: &Client, namespace: &str, name: &str) -> Result<String, String> {
    let api: Api<Evaluation> = Api::namespaced(client.clone(), namespace);
    let evaluation = tokio::time::timeout(LOOKUP_TIMEOUT, api.get_opt(name))
        .await
        .map_err(|_| format!("the API server did not answer within {LOOKUP_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot read Evaluation {namespace}/{name}: {e}"))?
        .ok_or_else(|| format!("no Evaluation {namespace}/{name}"))?;
    evaluation
        .status
        .and_then(|s| s.run_id)
        .ok_or_else(|| format!("Evaluation {namespace}/{name} has not started a run yet"))
}

/// Lists `run`'s calls from the ledger directory `root` onto `out`; the ledger's head (its
/// digest and totals) when it verifies.
pub fn list(
    root: &Path,
    run: &RunRef,
    output: Output,
    out: &mut impl Write,
) -> Result<Head, ListError> {
    let path = DirSink::new(root.to_path_buf())
        .path(&run.namespace, &run.run)
        .map_err(|e| ListError::Io(format!("run id {:?}: {e}", run.run)))?;
    let cannot_read =
        |e: std::io::Error| ListError::Io(format!("cannot read {}: {e}", path.display()));
    let mut file = match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ListError::Missing {
                namespace: run.namespace.clone(),
                evaluation: run.evaluation.clone(),
                run: run.run.clone(),
                path: path.display().to_string(),
            });
        }
        opened => opened.map_err(cannot_read)?,
    };
    let verified = scan(BufReader::new(&mut file), run, |_| Ok(()))?;
    file.rewind().map_err(cannot_read)?;
    let mut printer = Printer::new(output, run, out)?;
    let printed = scan(BufReader::new(file.take(verified.bytes)), run, |record| {
        printer.record(record)
    })?;
    if printed.head != verified.head {
        return Err(ListError::Changed);
    }
    printer.end(&printed.head)?;
    Ok(printed.head)
}

/// What one pass read.
struct Scanned {
    head: Head,
    /// Bytes of the complete lines read.
    bytes: u64,
}

/// Reads `reader` line by line, verifying each record and that it is `run`'s, and hands each to
/// `each`.
fn scan(
    mut reader: impl BufRead,
    run: &RunRef,
    mut each: impl FnMut(Record) -> Result<(), ListError>,
) -> Result<Scanned, ListError> {
    let mut head = Head::default();
    let mut bytes = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
        let read = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| ListError::Io(format!("cannot read the ledger: {e}")))?;
        if read == 0 {
            return Ok(Scanned { head, bytes });
        }
        let seq = head.next;
        let Some(text) = line.strip_suffix(b"\n") else {
            return Err(if line.len() > MAX_LINE_BYTES {
                ListError::TooLong { seq }
            } else {
                ListError::Incomplete { seq }
            });
        };
        let record: Record = serde_json::from_slice(text).map_err(|e| ListError::NotARecord {
            seq,
            why: format!("{:?}", e.classify()).to_lowercase(),
            column: e.column(),
        })?;
        head.follow(&record)?;
        if record.namespace != run.namespace
            || record.evaluation != run.evaluation
            || record.run != run.run
        {
            return Err(ListError::Foreign { seq });
        }
        bytes += read as u64;
        each(record)?;
    }
}

/// Writes the listing as records come, in one of the [`Output`] formats.
struct Printer<'w, W: Write> {
    output: Output,
    out: &'w mut W,
    first: bool,
}

impl<'w, W: Write> Printer<'w, W> {
    fn new(output: Output, run: &RunRef, out: &'w mut W) -> Result<Self, ListError> {
        let mut printer = Self {
            output,
            out,
            first: true,
        };
        let opening = match output {
            Output::Table => format!("{}\n", table_row(HEADER.map(String::from))),
            Output::Json => {
                let json = |s: &str| serde_json::Value::from(s).to_string();
                format!(
                    "{{\"namespace\":{},\"evaluation\":{},\"run\":{},\"calls\":[",
                    json(&run.namespace),
                    json(&run.evaluation),
                    json(&run.run)
                )
            }
            Output::Jsonl => String::new(),
        };
        printer.write(opening.as_bytes())?;
        Ok(printer)
    }

    fn record(&mut self, mut record: Record) -> Result<(), ListError> {
        // Bodies only where asked for by name: a table or a line stream is for looking through.
        if self.output != Output::Json {
            record.request_body = None;
            record.response_body = None;
        }
        let text = match self.output {
            Output::Table => format!("{}\n", table_row(cells(&record))),
            Output::Json => {
                let comma = if self.first { "" } else { "," };
                format!("{comma}{}", to_json(&record)?)
            }
            Output::Jsonl => format!("{}\n", to_json(&record)?),
        };
        self.first = false;
        self.write(text.as_bytes())
    }

    fn end(mut self, head: &Head) -> Result<(), ListError> {
        let closing = match self.output {
            Output::Table => totals(head),
            Output::Json => format!(
                "],\"totals\":{},\"ledgerDigest\":{}}}\n",
                to_json(&head.spent)?,
                serde_json::Value::from(head.hash.as_str())
            ),
            Output::Jsonl => String::new(),
        };
        self.write(closing.as_bytes())?;
        self.out
            .flush()
            .map_err(|e| ListError::Io(format!("cannot write the listing: {e}")))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ListError> {
        self.out
            .write_all(bytes)
            .map_err(|e| ListError::Io(format!("cannot write the listing: {e}")))
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, ListError> {
    serde_json::to_string(value).map_err(|e| ListError::Io(e.to_string()))
}

const HEADER: [&str; 7] = [
    "TIME", "MODEL", "INPUT", "OUTPUT", "COST_USD", "DIGEST", "STATUS",
];

/// Column widths: fixed, since rows are printed as they are read. The last one is not padded.
const WIDTHS: [usize; 6] = [20, 24, 9, 9, 11, 19];

fn table_row(cells: [String; 7]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let width = WIDTHS.get(i).copied().unwrap_or(0);
        line.push_str(&format!("{cell:<width$} "));
    }
    line.trim_end().to_string()
}

/// A record's table cells. Text from the file goes through [`printable`]: a ledger is not
/// allowed to move the terminal's cursor.
fn cells(record: &Record) -> [String; 7] {
    let time = record
        .time
        .parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| printable(&record.time));
    let status = match (record.status, record.outcome.as_str()) {
        (0, outcome) => format!("- {}", printable(outcome)),
        (code, "ok") => format!("{code} ok"),
        (code, outcome) => format!("{code} {}", printable(outcome)),
    };
    [
        time,
        printable(&record.model),
        record.input_tokens.to_string(),
        record.output_tokens.to_string(),
        format!("{:.6}", record.cost_usd),
        short(&record.hash),
        status,
    ]
}

/// The totals lines of a table: what the last record says the run spent, and its hash.
fn totals(head: &Head) -> String {
    let spent = &head.spent;
    format!(
        "{}\nledger digest: {}\n",
        table_row([
            "TOTAL".into(),
            format!("{} calls", spent.calls),
            spent.input_tokens.to_string(),
            spent.output_tokens.to_string(),
            format!("{:.6}", spent.cost_usd),
            String::new(),
            String::new(),
        ]),
        if head.hash.is_empty() {
            "(no records)".to_string()
        } else {
            printable(&head.hash)
        }
    )
}

/// `sha256:` and the first 12 hex digits.
fn short(hash: &str) -> String {
    printable(&hash.chars().take("sha256:".len() + 12).collect::<String>())
}

fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ledger::{DirSink, Ledger};

    fn run() -> RunRef {
        RunRef {
            namespace: "team-a".into(),
            evaluation: "agent".into(),
            run: "run-1".into(),
        }
    }

    fn record(model: &str, input: u64, output: u64, cost: f64) -> Record {
        Record {
            time: "2026-12-07T04:00:00.123456Z".into(),
            input_tokens: input,
            output_tokens: output,
            cost_usd: cost,
            request_body: Some("{\"messages\":\"the request\"}".into()),
            response_body: Some("the answer".into()),
            ..crate::gateway::ledger::tests::record(model)
        }
    }

    /// A ledger of three calls written by the gateway's own ledger and sink; the second failed.
    fn written() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(Box::new(DirSink::new(dir.path().to_path_buf())));
        let mut failed = record("gpt-4.1", 7, 0, 0.0);
        failed.status = 502;
        failed.outcome = "the provider answered 502".into();
        for r in [
            record("gpt-4.1-mini", 10, 20, 0.25),
            failed,
            record("gpt-4.1-mini", 1, 2, 0.5),
        ] {
            ledger.append(r, i64::MAX).expect("append");
        }
        dir
    }

    fn listing(root: &Path, output: Output) -> Result<(Head, String), ListError> {
        let mut out = Vec::new();
        let head = list(root, &run(), output, &mut out)?;
        Ok((head, String::from_utf8(out).expect("utf-8")))
    }

    fn ledger_file(root: &Path) -> PathBuf {
        root.join("team-a/run-1.jsonl")
    }

    #[test]
    fn a_table_lists_each_call_and_the_totals_without_bodies() {
        let dir = written();
        let (head, text) = listing(dir.path(), Output::Table).expect("lists");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 3 + 2, "{text}");
        assert!(lines[0].starts_with("TIME") && lines[0].ends_with("STATUS"));
        let first: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            first,
            [
                "2026-12-07T04:00:00Z",
                "gpt-4.1-mini",
                "10",
                "20",
                "0.250000",
                &head_hash_prefix(dir.path(), 0),
                "200",
                "ok"
            ]
        );
        assert!(
            lines[2].ends_with("502 the provider answered 502"),
            "{text}"
        );
        let total: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(total, ["TOTAL", "3", "calls", "18", "22", "0.750000"]);
        assert_eq!(lines[5], format!("ledger digest: {}", head.hash));
        assert!(!text.contains("the answer") && !text.contains("the request"));
    }

    fn head_hash_prefix(root: &Path, seq: usize) -> String {
        let text = std::fs::read_to_string(ledger_file(root)).expect("ledger");
        let record: Record =
            serde_json::from_str(text.lines().nth(seq).expect("line")).expect("json");
        record.hash[..("sha256:".len() + 12)].to_string()
    }

    #[test]
    fn json_carries_the_bodies_and_the_digest_and_jsonl_neither_body() {
        let dir = written();
        let (head, text) = listing(dir.path(), Output::Json).expect("lists");
        let json: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(json["run"], "run-1");
        assert_eq!(json["calls"].as_array().map(Vec::len), Some(3));
        assert_eq!(json["calls"][0]["responseBody"], "the answer");
        assert_eq!(json["totals"]["calls"], 3);
        assert_eq!(json["totals"]["inputTokens"], 18);
        assert_eq!(json["ledgerDigest"], head.hash.as_str());
        let (_, text) = listing(dir.path(), Output::Jsonl).expect("lists");
        let records: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a record per line"))
            .collect();
        assert_eq!(records.len(), 3);
        assert!(
            records
                .iter()
                .all(|r| r.request_body.is_none() && r.response_body.is_none())
        );
        assert_eq!(records[2].hash, head.hash);
    }

    /// Rewrites line `seq` of the ledger with `edit`.
    fn tamper(root: &Path, seq: usize, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = ledger_file(root);
        let text = std::fs::read_to_string(&path).expect("ledger");
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut value: serde_json::Value = serde_json::from_str(&lines[seq]).expect("json");
        edit(&mut value);
        lines[seq] = value.to_string();
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    }

    #[test]
    fn a_tampered_record_is_named_by_its_number_and_nothing_is_listed() {
        let dir = written();
        tamper(dir.path(), 1, |r| r["model"] = "gpt-4.1-mini".into());
        let mut out = Vec::new();
        let error = list(dir.path(), &run(), Output::Table, &mut out).expect_err("broken");
        assert!(
            matches!(error, ListError::Broken(Broken { seq: 1, .. })),
            "{error}"
        );
        assert!(error.to_string().contains("record 1"), "{error}");
        assert!(out.is_empty(), "printed {}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn a_record_of_another_run_or_no_record_at_all_breaks_the_listing() {
        let dir = written();
        let other = RunRef {
            evaluation: "other".into(),
            ..run()
        };
        let error = list(dir.path(), &other, Output::Jsonl, &mut Vec::new()).expect_err("foreign");
        assert!(matches!(error, ListError::Foreign { seq: 0 }), "{error}");
        let path = ledger_file(dir.path());
        let mut text = std::fs::read_to_string(&path).expect("ledger");
        text.push_str("{\"seq\": 3, \"secret\n");
        std::fs::write(&path, &text).expect("write");
        let error = listing(dir.path(), Output::Table).expect_err("not a record");
        assert!(
            matches!(error, ListError::NotARecord { seq: 3, .. }),
            "{error}"
        );
        assert!(!error.to_string().contains("secret"), "{error}");
        std::fs::write(&path, text.trim_end()).expect("write");
        let error = listing(dir.path(), Output::Table).expect_err("cut short");
        assert!(matches!(error, ListError::Incomplete { seq: 3 }), "{error}");
    }

    #[test]
    fn a_line_longer_than_the_bound_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = ledger_file(dir.path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, vec![b'x'; MAX_LINE_BYTES + 2]).expect("write");
        let error = listing(dir.path(), Output::Table).expect_err("too long");
        assert!(matches!(error, ListError::TooLong { seq: 0 }), "{error}");
    }

    #[test]
    fn a_missing_run_says_where_its_ledger_would_be() {
        let dir = written();
        let missing = RunRef {
            run: "run-2".into(),
            ..run()
        };
        let error = list(dir.path(), &missing, Output::Table, &mut Vec::new()).expect_err("none");
        assert!(matches!(error, ListError::Missing { .. }), "{error}");
        assert!(error.to_string().contains("team-a/run-2.jsonl"), "{error}");
        let escape = RunRef {
            run: "../run-1".into(),
            ..run()
        };
        assert!(matches!(
            list(dir.path(), &escape, Output::Table, &mut Vec::new()),
            Err(ListError::Io(_))
        ));
    }

    #[test]
    fn text_from_the_ledger_cannot_drive_the_terminal() {
        let mut r = record("m\u{1b}[2J", 0, 0, 0.0);
        r.outcome = "bad\rline".into();
        r.status = 0;
        let row = table_row(cells(&r));
        assert!(!row.chars().any(char::is_control), "{row:?}");
        assert!(row.contains("- bad\u{fffd}line"), "{row:?}");
    }

    #[tokio::test]
    async fn the_run_id_comes_from_the_evaluations_status() {
        use crate::fixtures::{ApiServerVerifier, status_error};
        use http::Method;
        let (client, mut verifier) = ApiServerVerifier::client();
        let path = "/apis/crucible.dev/v1alpha1/namespaces/team-a/evaluations/arith";
        let server = tokio::spawn(async move {
            let started = Evaluation::test().with_status(crate::crd::EvaluationStatus {
                run_id: Some("run-7".into()),
                ..Default::default()
            });
            let json = |e: Evaluation| serde_json::to_value(e).expect("json");
            verifier.expect(Method::GET, path, 200, json(started)).await;
            verifier
                .expect(Method::GET, path, 200, json(Evaluation::test()))
                .await;
            verifier
                .expect(Method::GET, path, 404, status_error(404, "NotFound"))
                .await;
        });
        assert_eq!(run_id(&client, "team-a", "arith").await, Ok("run-7".into()));
        let not_started = run_id(&client, "team-a", "arith").await;
        assert!(not_started.is_err_and(|e| e.contains("has not started a run")));
        let missing = run_id(&client, "team-a", "arith").await;
        assert_eq!(missing, Err("no Evaluation team-a/arith".into()));
        server.await.expect("mock API server");
    }
}
