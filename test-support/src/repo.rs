//! Files of the repository the tests read: the captured controller
//! expositions under `tests/fixtures/`, the manifests, the README.

use std::path::{Path, PathBuf};

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("test-support/ is in the repository").to_owned()
}

/// The controller exposition fixture `name`.
pub fn fixture(name: &str) -> String {
    let path = repo().join("tests/fixtures/pravega-controller").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
