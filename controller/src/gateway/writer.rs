//! The ledger's one writer: a thread that appends the settled calls' records in the order they
//! come, so a call's response never waits for the disk and no call costs a blocking task of
//! its own. The budget is settled before a record is queued; what the ledger says (a run's
//! usage for the controller, a shutdown) first waits for the records queued before it.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use super::ledger::{Ledger, Record};

/// Records waiting for the writer; when it falls this far behind, callers wait for room off
/// the async workers instead of the queue growing without end.
pub const QUEUE: usize = 16 * 1024;

enum Job {
    Append(Box<Record>, i64),
    /// Answered once every job queued before it is done.
    Flush(SyncSender<()>),
}

/// The handle of the writer thread of one [`Ledger`]; the thread ends when the handle is
/// dropped, after the records queued before.
pub struct Writer {
    queue: SyncSender<Job>,
}

impl Writer {
    /// Starts the writer of `ledger`.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(ledger: Arc<Ledger>) -> std::io::Result<Self> {
        let (queue, jobs) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || write(&ledger, &jobs))?;
        Ok(Self { queue })
    }

    /// Queues `record` (its run's tokens expire at `expires`). Never blocks an async worker:
    /// with the queue full, a blocking task waits for room.
    pub fn append(&self, record: Record, expires: i64) {
        match self.queue.try_send(Job::Append(Box::new(record), expires)) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                let queue = self.queue.clone();
                let wait = move || drop(queue.send(job));
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(wait)),
                    Err(_) => wait(),
                }
            }
            // Only when the writer thread panicked; its error was logged there.
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("the call ledger's writer is gone; a record is lost");
            }
        }
    }

    /// Waits (blocking) until every record queued before is written.
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.queue.send(Job::Flush(done)).is_ok() {
            // An error means the writer is gone: nothing more will be written anyway.
            let _ = wait.recv();
        }
    }
}

fn write(ledger: &Ledger, jobs: &Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Append(record, expires) => {
                tracing::debug!(
                    namespace = %record.namespace, run = %record.run, model = %record.model,
                    status = record.status, outcome = %record.outcome,
                    input_tokens = record.input_tokens, output_tokens = record.output_tokens,
                    latency_ms = record.latency_ms, "model call"
                );
                let run = record.run.clone();
                if let Err(e) = ledger.append(*record, expires) {
                    tracing::error!(%run, error = %e, "cannot append to the call ledger");
                }
            }
            Job::Flush(done) => drop(done.send(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ledger::DirSink;
    use crate::gateway::ledger::tests::{record, written};

    /// Records queued from many threads end up in one unbroken chain, and a flush returns only
    /// once all that were queued before it are in the file.
    #[test]
    fn queued_records_form_one_chain_and_a_flush_waits_for_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Arc::new(Ledger::new(Box::new(DirSink::new(dir.path().into()))));
        let writer = Arc::new(Writer::start(ledger.clone()).expect("writer"));
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        writer.append(record("gpt"), i64::MAX);
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().expect("sender");
        }
        writer.flush();
        let restarted = Ledger::new(Box::new(DirSink::new(dir.path().into())));
        let head = restarted
            .head_of("team-a", "run-1", i64::MAX)
            .expect("head");
        assert_eq!(
            head.spent.calls, 200,
            "every record written before the flush"
        );
        let chain = crate::gateway::ledger::verify(&written(dir.path()));
        assert_eq!(
            chain.map(|h| h.next).map_err(|e| e.seq),
            Ok(200),
            "one unbroken chain"
        );
    }
}
