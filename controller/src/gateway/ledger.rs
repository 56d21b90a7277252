//! The call ledger: one record per call, each naming the hash of the one before, so that a
//! record changed, removed or inserted afterwards breaks the chain. The chain is pure; where
//! the lines go is a [`Sink`] (a directory of JSON Lines files for now; the results store later).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::budget::{Spent, Usage};
use super::expiring::ExpiringMap;
use super::window::{BUCKET_SECONDS, WINDOW_SECONDS, Window};
use crate::digest::sha256_hex;

/// What the ledger keeps of each call (`spec.recordCalls`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordCalls {
    /// Digests of request and response.
    #[default]
    Digests,
    /// The bodies too.
    Full,
}

/// The `prev` of a run's first record.
pub const GENESIS: &str = "";

/// One call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Position in the run's chain, from 0.
    pub seq: u64,
    /// When the call started (RFC 3339).
    pub time: String,
    /// Namespace of the run.
    pub namespace: String,
    /// Evaluation of the run.
    pub evaluation: String,
    /// The run.
    pub run: String,
    /// Model id requested.
    pub model: String,
    /// Model the provider says answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
    /// Path called, e.g. `/v1/chat/completions`.
    pub path: String,
    /// HTTP status of the provider's answer; 0 when there was none.
    pub status: u16,
    /// How the call ended: `ok`, or what went wrong.
    pub outcome: String,
    /// Milliseconds from request to the end of the response.
    pub latency_ms: u64,
    /// Input tokens reported.
    pub input_tokens: u64,
    /// Output tokens reported.
    pub output_tokens: u64,
    /// Cost at the endpoint's price, in US dollars.
    #[serde(rename = "costUSD")]
    pub cost_usd: f64,
    /// `sha256:` of the request body as forwarded.
    pub request_digest: String,
    /// `sha256:` of the response body as returned.
    pub response_digest: String,
    /// The request body (`recordCalls: Full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// The response body (`recordCalls: Full`), cut at the recording bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// What the run has spent with this call included: a restarted gateway resumes from it.
    pub spent: Spent,
    /// The same per model id, sorted by id: the run's usage by model resumes from it too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_model: Vec<ModelSpent>,
    /// `hash` of the previous record, [`GENESIS`] for the first.
    pub prev: String,
    /// `sha256:` over this record with `hash` empty.
    pub hash: String,
}

impl Record {
    fn digest(&self) -> String {
        let unsealed = Record {
            hash: String::new(),
            ..self.clone()
        };
        // A struct of strings and numbers always serialises.
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        format!("sha256:{}", sha256_hex(&bytes))
    }
}

/// What one run has spent on one model id.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpent {
    /// Model id requested.
    pub model: String,
    /// The model the provider last said answered, cut at [`MAX_SERVED_MODEL_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
    /// Its calls, tokens and cost.
    #[serde(flatten)]
    pub spent: Spent,
}

/// Longest served model name carried in the running totals (it comes from the provider).
pub const MAX_SERVED_MODEL_BYTES: usize = crate::crd::bounds::MAX_MODEL_ID_LEN;

/// The end of one run's chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Head {
    /// `seq` of the next record.
    pub next: u64,
    /// `hash` of the last record.
    pub hash: String,
    /// `spent` of the last record.
    pub spent: Spent,
    /// `byModel` of the last record. One entry per model id the run's token lists at most.
    pub by_model: Vec<ModelSpent>,
}

impl Head {
    /// Links `record` after this head and seals it.
    pub fn seal(&mut self, mut record: Record) -> Record {
        record.seq = self.next;
        record.prev = self.hash.clone();
        let usage = Usage {
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
        };
        self.spent.add(&usage, record.cost_usd);
        let at = match self
            .by_model
            .binary_search_by(|m| m.model.as_str().cmp(&record.model))
        {
            Ok(at) => at,
            Err(at) => {
                let model = ModelSpent {
                    model: record.model.clone(),
                    ..ModelSpent::default()
                };
                self.by_model.insert(at, model);
                at
            }
        };
        let entry = &mut self.by_model[at];
        entry.spent.add(&usage, record.cost_usd);
        if let Some(served) = &record.served_model {
            entry.served_model = Some(crate::events::truncate(served, MAX_SERVED_MODEL_BYTES));
        }
        record.spent = self.spent;
        record.by_model = self.by_model.clone();
        record.hash = record.digest();
        self.next += 1;
        self.hash = record.hash.clone();
        record
    }
}

/// Where a chain breaks.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("the call ledger breaks at record {seq}: {why}")]
pub struct Broken {
    /// The first record that does not verify.
    pub seq: u64,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Checks a run's records in order; returns the head (its hash is the ledger's digest).
pub fn verify<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<Head, Broken> {
    let mut head = Head::default();
    for record in records {
        head.follow(record)?;
    }
    Ok(head)
}

impl Head {
    /// Checks that `record` is the next one after this head and moves past it: one step of
    /// [`verify`], for a ledger read line by line.
    pub fn follow(&mut self, record: &Record) -> Result<(), Broken> {
        let broken = |why| Broken {
            seq: self.next,
            why,
        };
        if record.seq != self.next {
            return Err(broken("out of sequence"));
        }
        if record.prev != self.hash {
            return Err(broken("does not follow the record before"));
        }
        if record.hash != record.digest() {
            return Err(broken("its content does not match its hash"));
        }
        let mut expected = self.clone();
        let sealed = expected.seal(record.clone());
        if sealed.spent != record.spent || sealed.by_model != record.by_model {
            return Err(broken("its running totals do not add up"));
        }
        *self = expected;
        Ok(())
    }
}

/// Where sealed records go, one JSON line each, per run.
pub trait Sink: Send + Sync {
    /// Appends one line (ending in `\n`) to the ledger of `namespace`/`run`.
    fn append(&self, namespace: &str, run: &str, line: &[u8]) -> std::io::Result<()>;
    /// The last line of that ledger (without its `\n`), `None` when it has none.
    fn last_line(&self, namespace: &str, run: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Hands each complete line (without its `\n`) of `namespace`'s ledgers written to at or
    /// after `since` (Unix seconds) to `each`: the ledgers that may hold calls of a window.
    fn recent_lines(
        &self,
        namespace: &str,
        since: i64,
        each: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()>;
}

/// Longest ledger line read back: a record with both bodies at their recording bound, escaped.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Ledger files kept open for appending; past this many the set starts over (runs that call
/// often reopen theirs once).
const OPEN_FILES: usize = 256;

/// A directory of `<namespace>/<run>.jsonl` files.
pub struct DirSink {
    root: PathBuf,
    /// Files appended to lately: a call costs one write, not an open and a directory check.
    open: Mutex<HashMap<PathBuf, std::fs::File>>,
}

impl DirSink {
    /// Ledgers under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            open: Mutex::default(),
        }
    }

    /// The file of one run's ledger. Namespace and run ids are Kubernetes names and UIDs; a
    /// `/` or `..` in them could not come from the API server, but is refused all the same.
    pub fn path(&self, namespace: &str, run: &str) -> std::io::Result<PathBuf> {
        Ok(self.dir(namespace)?.join(format!("{}.jsonl", safe(run)?)))
    }

    /// The directory of a namespace's ledgers.
    fn dir(&self, namespace: &str) -> std::io::Result<PathBuf> {
        Ok(self.root.join(safe(namespace)?))
    }
}

/// `id` when it can only name a file directly under its directory.
fn safe(id: &str) -> std::io::Result<&str> {
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(std::io::Error::other("unsafe namespace or run id"));
    }
    Ok(id)
}

impl Sink for DirSink {
    fn append(&self, namespace: &str, run: &str, line: &[u8]) -> std::io::Result<()> {
        let path = self.path(namespace, run)?;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let file = match open.entry(path) {
            Entry::Occupied(file) => file.into_mut(),
            Entry::Vacant(slot) => {
                if let Some(dir) = slot.key().parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(slot.key())?;
                slot.insert(file)
            }
        };
        // One write per line: concurrent appenders never interleave within a record.
        let written = file.write_all(line);
        if open.len() >= OPEN_FILES || written.is_err() {
            // Bounded; and a failed file is opened afresh next time.
            open.clear();
        }
        written
    }

    fn last_line(&self, namespace: &str, run: &str) -> std::io::Result<Option<Vec<u8>>> {
        let mut file = match std::fs::File::open(self.path(namespace, run)?) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            opened => opened?,
        };
        // Read backwards in blocks until the line before the last ends: one record, not the
        // whole ledger.
        const BLOCK: u64 = 64 * 1024;
        let mut pos = file.seek(SeekFrom::End(0))?;
        let mut tail = Vec::new();
        while pos > 0 {
            let step = BLOCK.min(pos);
            pos -= step;
            file.seek(SeekFrom::Start(pos))?;
            let mut block = vec![0; usize::try_from(step).unwrap_or(0)];
            file.read_exact(&mut block)?;
            block.extend_from_slice(&tail);
            tail = block;
            let line = tail.strip_suffix(b"\n").unwrap_or(&tail);
            if let Some(start) = line.iter().rposition(|b| *b == b'\n') {
                return Ok(Some(line[start + 1..].to_vec()));
            }
            if tail.len() > MAX_LINE_BYTES {
                return Err(std::io::Error::other("the ledger's last line is too long"));
            }
        }
        let line = tail.strip_suffix(b"\n").unwrap_or(&tail);
        Ok((!line.is_empty()).then(|| line.to_vec()))
    }

    fn recent_lines(
        &self,
        namespace: &str,
        since: i64,
        each: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let dir = self.dir(namespace)?;
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            listed => listed?,
        };
        let since = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(since).unwrap_or(0));
        for entry in entries {
            let entry = entry?;
            // Only the gateway's own files: regular, named `<run>.jsonl`, written lately.
            let meta = entry.metadata()?;
            let ours = meta.is_file() && entry.path().extension().is_some_and(|e| e == "jsonl");
            if !ours || meta.modified()? < since {
                continue;
            }
            let mut reader = BufReader::new(crate::files::open_regular(&entry.path())?);
            let mut line = Vec::new();
            loop {
                line.clear();
                let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
                if (&mut reader).take(limit).read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                match line.strip_suffix(b"\n") {
                    Some(text) => each(text)?,
                    None if line.len() > MAX_LINE_BYTES => {
                        return Err(std::io::Error::other(format!(
                            "a line of {} is too long",
                            entry.path().display()
                        )));
                    }
                    // A last line cut short: a gateway stopped mid-write; that call was not
                    // recorded, so it is not counted (as its run's usage does not count it).
                    None => break,
                }
            }
        }
        Ok(())
    }
}

/// The fields of a ledger record a window needs (the rest of the line is skipped, bodies
/// included, without being kept).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counted {
    time: String,
    input_tokens: u64,
    output_tokens: u64,
    #[serde(rename = "costUSD")]
    cost_usd: f64,
}

/// The gateway's ledger: per-run heads (each kept while its run's tokens are valid), and the
/// sink the sealed records go to.
pub struct Ledger {
    heads: Mutex<ExpiringMap<Head>>,
    sink: Box<dyn Sink>,
}

impl Ledger {
    /// A ledger writing to `sink`.
    pub fn new(sink: Box<dyn Sink>) -> Self {
        Self {
            heads: Mutex::new(ExpiringMap::default()),
            sink,
        }
    }

    /// Seals `record` onto its run's chain (the run's tokens expire at `expires`) and appends
    /// it. Sealing and appending happen under one lock so the file's order is the chain's
    /// order; a failed append leaves the head where it was, so the next record still links to
    /// the last one written.
    pub fn append(&self, record: Record, expires: i64) -> std::io::Result<Record> {
        let mut heads = self.lock()?;
        let head = self.head(&mut heads, &record.namespace, &record.run, expires)?;
        let mut next = head.clone();
        let sealed = next.seal(record);
        let mut line = serde_json::to_vec(&sealed).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.sink.append(&sealed.namespace, &sealed.run, &line)?;
        *head = next;
        Ok(sealed)
    }

    /// What `run` has spent by its ledger (after a restart, by its last record).
    pub fn spent(&self, namespace: &str, run: &str, expires: i64) -> std::io::Result<Spent> {
        let mut heads = self.lock()?;
        Ok(self.head(&mut heads, namespace, run, expires)?.spent)
    }

    /// The end of `run`'s chain: what it has spent, in all and per model, by its ledger.
    pub fn head_of(&self, namespace: &str, run: &str, expires: i64) -> std::io::Result<Head> {
        let mut heads = self.lock()?;
        Ok(self.head(&mut heads, namespace, run, expires)?.clone())
    }

    /// What `namespace`'s calls used over the window at `now`, rebuilt from its ledgers: every
    /// record whose call started within it, read from the files written to since. A restarted
    /// gateway builds a namespace's window once, on its first call that has a daily budget;
    /// this costs a read of the namespace's last day of records, once per process.
    pub fn window(&self, namespace: &str, now: i64) -> std::io::Result<Window> {
        let mut window = Window::default();
        let since = now.saturating_sub(WINDOW_SECONDS + BUCKET_SECONDS);
        self.sink.recent_lines(namespace, since, &mut |line| {
            let call: Counted = serde_json::from_slice(line).map_err(std::io::Error::other)?;
            let started: jiff::Timestamp = call.time.parse().map_err(std::io::Error::other)?;
            let tokens = call.input_tokens.saturating_add(call.output_tokens);
            window.add(started.as_second(), tokens, call.cost_usd, now);
            Ok(())
        })?;
        Ok(window)
    }

    /// Forgets the head of a run that has ended (its file stays).
    pub fn forget(&self, run: &str) {
        if let Ok(mut heads) = self.heads.lock() {
            heads.remove(run);
        }
    }

    fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, ExpiringMap<Head>>> {
        self.heads
            .lock()
            .map_err(|_| std::io::Error::other("ledger lock poisoned"))
    }

    /// The head of `run`, read from its ledger the first time.
    fn head<'a>(
        &self,
        heads: &'a mut ExpiringMap<Head>,
        namespace: &str,
        run: &str,
        expires: i64,
    ) -> std::io::Result<&'a mut Head> {
        // Pruned first: a call ending after its run's expiry must not find its head pruned
        // by `entry` and start a second chain; it reads the head back from the file instead.
        let now = super::now();
        heads.prune(now);
        let loaded = if heads.contains(run) {
            None
        } else {
            Some(self.load(namespace, run)?)
        };
        let head = heads.entry(run, expires, now, Head::default);
        if let Some(loaded) = loaded {
            *head = loaded;
        }
        Ok(head)
    }

    /// The head after a run's last written record; a last record that does not match its own
    /// hash is an error, not a fresh start.
    fn load(&self, namespace: &str, run: &str) -> std::io::Result<Head> {
        let Some(line) = self.sink.last_line(namespace, run)? else {
            return Ok(Head::default());
        };
        let last: Record = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
        if last.hash != last.digest() {
            return Err(std::io::Error::other(format!(
                "the last record of the ledger of run {run} does not match its hash"
            )));
        }
        Ok(Head {
            next: last.seq + 1,
            hash: last.hash,
            spent: last.spent,
            by_model: last.by_model,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A call of `team-a/agent` run `run-1`, unsealed (also the listing's tests' record).
    pub(crate) fn record(model: &str) -> Record {
        Record {
            seq: 0,
            time: "2026-12-07T04:00:00Z".into(),
            namespace: "team-a".into(),
            evaluation: "agent".into(),
            run: "run-1".into(),
            model: model.into(),
            served_model: None,
            path: "/v1/chat/completions".into(),
            status: 200,
            outcome: "ok".into(),
            latency_ms: 12,
            input_tokens: 3,
            output_tokens: 5,
            cost_usd: 0.5,
            request_digest: "sha256:aa".into(),
            response_digest: "sha256:bb".into(),
            request_body: None,
            response_body: None,
            spent: Spent::default(),
            by_model: Vec::new(),
            prev: String::new(),
            hash: String::new(),
        }
    }

    fn chain(n: usize) -> Vec<Record> {
        let mut head = Head::default();
        (0..n)
            .map(|i| head.seal(record(&format!("m{i}"))))
            .collect()
    }

    #[test]
    fn a_sealed_chain_verifies_to_its_last_hash() {
        let records = chain(3);
        let head = verify(&records).expect("verifies");
        assert_eq!(
            (head.next, head.hash.as_str()),
            (3, records[2].hash.as_str())
        );
        assert!(records[0].hash.starts_with("sha256:"));
    }

    #[test]
    fn a_tampered_record_breaks_the_chain() {
        let mut records = chain(3);
        records[1].output_tokens = 1;
        assert_eq!(verify(&records).map_err(|e| e.seq), Err(1));
    }

    #[test]
    fn the_totals_per_model_run_along_the_chain() {
        let mut head = Head::default();
        let mut served = record("b");
        served.served_model = Some(format!("b-{}", "9".repeat(2 * MAX_SERVED_MODEL_BYTES)));
        let records: Vec<Record> = [record("b"), record("a"), served]
            .into_iter()
            .map(|r| head.seal(r))
            .collect();
        let last = &records[2].by_model;
        let models: Vec<(&str, u64, u64)> = last
            .iter()
            .map(|m| (m.model.as_str(), m.spent.calls, m.spent.output_tokens))
            .collect();
        assert_eq!(models, [("a", 1, 5), ("b", 2, 10)], "sorted by id");
        let kept = last[1].served_model.as_deref().unwrap_or_default();
        assert_eq!(
            kept.len(),
            MAX_SERVED_MODEL_BYTES,
            "the provider's name is cut"
        );
        assert_eq!(records[0].by_model.len(), 1);
        // Totals per model that do not add up break the chain like the run's own.
        let mut forged = records.clone();
        forged[2].by_model[0].spent.calls = 0;
        forged[2].hash = forged[2].digest();
        assert_eq!(verify(&forged).map_err(|e| e.seq), Err(2));
    }

    #[test]
    fn totals_that_do_not_add_up_break_the_chain() {
        let mut records = chain(2);
        records[1].spent.calls = 1;
        records[1].hash = records[1].digest();
        assert_eq!(verify(&records).map_err(|e| e.seq), Err(1));
    }

    #[test]
    fn a_removed_or_resealed_record_breaks_the_chain() {
        let mut records = chain(3);
        records.remove(1);
        assert_eq!(verify(&records).map_err(|e| e.seq), Err(1));
        // Rewriting a record and resealing it alone still breaks the link to the next one.
        let mut records = chain(3);
        records[1].request_digest = "sha256:other".into();
        records[1].hash = records[1].digest();
        assert_eq!(verify(&records).map_err(|e| e.seq), Err(2));
    }

    /// The records of `team-a/run-1` under `root`, as written.
    pub(crate) fn written(root: &std::path::Path) -> Vec<Record> {
        let text = std::fs::read_to_string(root.join("team-a/run-1.jsonl")).expect("file");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    #[test]
    fn a_record_appended_after_its_runs_expiry_continues_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(Box::new(DirSink::new(dir.path().to_path_buf())));
        // Expired already: each append finds the head pruned and must read it back.
        for model in ["a", "b", "c"] {
            ledger.append(record(model), 0).expect("append");
        }
        assert_eq!(verify(&written(dir.path())).map(|h| h.next), Ok(3));
    }

    #[test]
    fn the_dir_sink_writes_lines_that_verify_and_refuses_unsafe_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(Box::new(DirSink::new(dir.path().to_path_buf())));
        for model in ["a", "b"] {
            ledger.append(record(model), i64::MAX).expect("append");
        }
        let records = written(dir.path());
        assert_eq!(verify(&records).map(|h| h.next), Ok(2));
        // A new ledger on the same directory (a restarted gateway) continues the chain and the
        // totals.
        let before = ledger.head_of("team-a", "run-1", i64::MAX).expect("head");
        let restarted = Ledger::new(Box::new(DirSink::new(dir.path().to_path_buf())));
        let spent = restarted.spent("team-a", "run-1", i64::MAX).expect("spent");
        assert_eq!((spent.calls, spent.output_tokens), (2, 10));
        let after = restarted
            .head_of("team-a", "run-1", i64::MAX)
            .expect("head");
        assert_eq!(after, before, "per model too, from the last line alone");
        restarted.append(record("c"), i64::MAX).expect("append");
        let records = written(dir.path());
        let head = verify(&records).expect("one chain across the restart");
        assert_eq!(
            (head.next, head.spent.calls, head.spent.cost_usd),
            (3, 3, 1.5)
        );
        let mut escape = record("a");
        escape.run = "../x".into();
        assert!(ledger.append(escape, i64::MAX).is_err());
    }

    #[test]
    fn a_namespaces_window_is_rebuilt_from_its_ledgers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(Box::new(DirSink::new(dir.path().to_path_buf())));
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().expect("time");
        let at = |ago: i64, run: &str, namespace: &str| {
            let mut call = record("m");
            call.time = (now - jiff::SignedDuration::from_secs(ago)).to_string();
            call.run = run.into();
            call.namespace = namespace.into();
            call
        };
        // Two runs of team-a within the day, one call of team-a older than a day, and team-b.
        for call in [
            at(25 * 3600, "run-1", "team-a"),
            at(3600, "run-1", "team-a"),
            at(60, "run-2", "team-a"),
            at(60, "run-3", "team-b"),
        ] {
            ledger.append(call, i64::MAX).expect("append");
        }
        // A gateway stopped mid-write: the cut line's call was not recorded, nor is counted.
        let torn = dir.path().join("team-a/run-2.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&torn)
            .expect("open");
        file.write_all(br#"{"seq":1,"time":"2026-12-07T11:59"#)
            .expect("write");
        let restarted = Ledger::new(Box::new(DirSink::new(dir.path().to_path_buf())));
        let mut window = restarted.window("team-a", now.as_second()).expect("window");
        // Each call: 3 input and 5 output tokens, 0.5 USD; the day-old one left the window.
        assert_eq!(window.used(now.as_second()), (16, 1.0));
        let mut empty = restarted
            .window("team-c", now.as_second())
            .expect("no ledgers yet");
        assert_eq!(empty.used(now.as_second()), (0, 0.0));
        // A line that is not a record stops the rebuild rather than undercounting.
        std::fs::write(dir.path().join("team-b/run-9.jsonl"), "not json\n").expect("write");
        assert!(restarted.window("team-b", now.as_second()).is_err());
    }
}
