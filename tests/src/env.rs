//! The prerequisite gate and the location of the binaries under test.

use std::path::{Path, PathBuf};

/// Tools every real-mount test needs besides the ones it names.
const BASE_TOOLS: &[&str] = &["fusermount3", "umount", "mount"];

/// Returns true when the environment variable `CI` is `true` (or `1`).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Checks that the test can run: root, `/dev/fuse`, FUSE tools and each of `tools` on `PATH`.
///
/// Under `CI=true` a missing prerequisite panics, so the test fails rather than passes without
/// having run. Elsewhere it prints a loud message and returns false; the test then returns early.
/// A missing `sheepfs` or `dog` binary is a build problem, not a prerequisite: it always panics.
pub fn require(tools: &[&str]) -> bool {
    let missing = missing_prerequisites(tools);
    for name in ["sheepfs", "dog"] {
        let path = bin(name);
        assert!(
            path.is_file(),
            "{} not found: run `cargo build --workspace --bins` before the tests",
            path.display()
        );
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing prerequisites: {}", missing.join(", "));
    assert!(
        !in_ci(),
        "{msg} (CI=true: a missing prerequisite is a failure)"
    );
    eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    false
}

fn missing_prerequisites(tools: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse".to_owned());
    }
    for tool in BASE_TOOLS.iter().chain(tools) {
        if which(tool).is_none() {
            missing.push((*tool).to_owned());
        }
    }
    missing
}

/// Finds `tool` on `PATH`, then in the sbin directories that a non-login `PATH` may lack.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Returns `target/<profile>/<name>`, found from the running test executable, which lives in
/// `target/<profile>/deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test executable has a parent directory");
    let profile_dir = if deps.ends_with("deps") {
        deps.parent().expect("deps has a parent directory")
    } else {
        deps
    };
    profile_dir.join(name)
}
