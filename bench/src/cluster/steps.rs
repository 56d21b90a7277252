//! The rows of a benchmark run in steps, one count each (B3 and its Kueue baseline). A row is
//! logged the moment it is measured, before its step's cleanup: deleting a namespace of 10,000
//! objects takes minutes and may outlast the time the whole run was given. A cleanup that
//! fails is reported beside the rows, which stand; the steps after it are not run, since they
//! would share the API server with what was left.

use super::{Error, say};
use crate::stats::table;

pub struct Steps {
    /// What the log lines start with: `B3`, `Kueue`.
    name: &'static str,
    rows: Vec<Vec<String>>,
    /// What went wrong in cleanups.
    problems: Vec<String>,
}

impl Steps {
    pub fn new(name: &'static str) -> Steps {
        Steps {
            name,
            rows: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Logs a measured row at once and keeps it.
    pub fn measured(&mut self, row: Vec<String>) {
        say(self.line(&row));
        self.rows.push(row);
    }

    /// `B3: 1000 | 20.9 MiB | …`: a row as the log shows it.
    fn line(&self, row: &[String]) -> String {
        format!("{}: {}", self.name, row.join(" | "))
    }

    /// Keeps the failure of a cleanup (`what`: what it did); the rows stand.
    pub fn cleaned(&mut self, what: &str, outcome: Result<(), Error>) {
        if let Err(e) = outcome {
            let problem = format!("cleanup failed, {what}: {e}");
            say(format!("{}: WARNING: {problem}", self.name));
            self.problems.push(problem);
        }
    }

    /// Whether a cleanup failed: the next step is not run.
    pub fn failed(&self) -> bool {
        !self.problems.is_empty()
    }

    /// The table of the rows under `header`, then every cleanup problem and the counts of
    /// `planned` that got no row.
    pub fn section(&self, header: &[&str], planned: &[u32]) -> String {
        let mut out = table(header, &self.rows);
        for problem in &self.problems {
            out.push_str(&format!("{problem}\n"));
        }
        let missing: Vec<String> = planned
            .iter()
            .skip(self.rows.len())
            .map(u32::to_string)
            .collect();
        if !missing.is_empty() {
            out.push_str(&format!("not run: {}\n", missing.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn a_failed_cleanup_keeps_the_measured_row_and_names_the_steps_not_run() {
        let mut steps = Steps::new("Kueue");
        let header = ["queued", "RSS"];
        let (small, large) = (row(&["1000", "72.4 MiB"]), row(&["10000", "120.5 MiB"]));
        steps.measured(small.clone());
        steps.cleaned("deleting the 1000 step's objects", Ok(()));
        assert!(!steps.failed());
        steps.measured(large.clone());
        steps.cleaned(
            "deleting the 10000 step's objects",
            Err(Error::Timeout {
                what: "namespace deletion".into(),
                secs: 900,
            }),
        );
        assert!(steps.failed());
        assert_eq!(
            steps.section(&header, &[1000, 10000, 20000]),
            format!(
                "{}cleanup failed, deleting the 10000 step's objects: timed out after 900 s \
                 waiting for namespace deletion\nnot run: 20000\n",
                table(&header, &[small, large])
            )
        );
    }

    #[test]
    fn rows_are_logged_as_the_table_shows_them() {
        let steps = Steps::new("B3");
        assert_eq!(
            steps.line(&row(&["1000", "20.9 MiB", "7.4 s"])),
            "B3: 1000 | 20.9 MiB | 7.4 s"
        );
        assert_eq!(steps.section(&["queued"], &[]), table(&["queued"], &[]));
    }
}
