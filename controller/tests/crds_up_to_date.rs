//! The committed CRDs (under `crds/` and the Helm chart) are exactly what the Rust types
//! produce. Fails with the command to run when they drift.

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rendered = crucible::crd::render_all().expect("CRDs render");
    assert!(!rendered.is_empty());
    for dir in crucible::crd::OUTPUT_DIRS {
        for (file, yaml) in &rendered {
            let path = root.join(dir).join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == *yaml,
                "{} is out of date: run `cargo run -p crucible -- crds --write .` and commit",
                path.display()
            );
        }
    }
}
