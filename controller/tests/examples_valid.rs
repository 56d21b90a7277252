//! Every manifest in `examples/evaluations/` parses into an Evaluation, passes validation, and
//! states the outcome it must reach (which the e2e tier then checks on a real cluster).

use std::path::{Path, PathBuf};

use crucible::config::Config;
use crucible::crd::Evaluation;
use crucible::evaluation::validate::validate;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evaluations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/evaluations exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_parses_validates_and_states_its_outcome() {
    let files = examples();
    assert!(
        files.len() >= 5,
        "expected at least five examples, found {files:?}"
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let ev: Evaluation = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not an Evaluation: {e}", path.display()));
        assert_eq!(
            validate(&ev.spec, &Config::default()),
            Ok(()),
            "{} is invalid",
            path.display()
        );
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()));
        assert!(expect.contains("phase="), "{}: {expect}", path.display());
        assert!(
            text.lines().take_while(|l| l.starts_with('#')).count() >= 2,
            "{} must say in a comment what it shows",
            path.display()
        );
    }
}
