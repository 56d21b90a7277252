//! The committed API reference under `docs/reference/` is exactly what the CRD schemas render.
//! Fails with the command to run when it drifts.

use std::collections::BTreeSet;
use std::path::Path;

use crucible::apiref;

#[test]
fn committed_api_reference_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(apiref::OUTPUT_DIR);
    let rendered = apiref::render_all();
    assert!(rendered.len() > 1, "one page per kind plus the index");
    for (file, markdown) in &rendered {
        let path = dir.join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == *markdown,
            "{} is out of date: run `{}` and commit",
            path.display(),
            apiref::REGENERATE
        );
    }
    let committed: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("docs/reference exists")
        .map(|entry| entry.expect("directory entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .collect();
    let expected: BTreeSet<String> = rendered.into_iter().map(|(file, _)| file).collect();
    assert!(
        committed == expected,
        "{} holds {committed:?} but the types render {expected:?}: run `{}` and commit",
        dir.display(),
        apiref::REGENERATE
    );
}
