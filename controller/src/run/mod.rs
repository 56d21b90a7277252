//! The pure model of one run, below every controller that uses it: which run is current and
//! its ids ([`identity`], [`state`]), the spec's validation, the children it needs ([`owner`],
//! [`pod`], [`workspace`], [`models`]), the resources it holds ([`request`], [`liveness`]), what its pod's
//! state means ([`phase`]) and its result ([`results`]).
//!
//! No API client, no API handle, no awaiting here (`pure_run_model` in this module's tests keeps it
//! so): the Evaluation and suite controllers, admission, the canary, the git sources and
//! `crucible run` all build on it.

pub mod fetched;
pub mod identity;
pub mod liveness;
pub mod models;
pub mod owner;
pub mod phase;
pub mod pod;
pub mod request;
pub mod results;
pub mod state;
pub mod validate;
pub mod workspace;

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The run model stays pure: no file under `src/run/` talks to the API server or waits.
    #[test]
    fn pure_run_model() {
        // Spelled apart so this test does not find itself.
        let forbidden = [
            concat!("Cli", "ent"),
            concat!("Api", "<"),
            concat!(".aw", "ait"),
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/run");
        let mut offences = Vec::new();
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).expect("src/run is readable") {
            let path = entry.expect("a directory entry").path();
            let text = std::fs::read_to_string(&path).expect("a source file");
            files += 1;
            for (n, line) in text.lines().enumerate() {
                if let Some(word) = forbidden.iter().find(|w| line.contains(**w)) {
                    offences.push(format!("{}:{}: {word}", path.display(), n + 1));
                }
            }
        }
        assert!(files > 10, "read {files} files of {}", dir.display());
        assert!(
            offences.is_empty(),
            "I/O in the run model:\n{}",
            offences.join("\n")
        );
    }
}
