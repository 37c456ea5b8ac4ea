//! Which `tracking` binary the harness runs. Cargo tells an integration test only where its own
//! package's binaries are (`CARGO_BIN_EXE_*`), and the agent is another package, so the harness
//! looks in the workspace's target directory. `cargo xtask test` builds the agent first and
//! names it in `TRACKING_BIN`, so the suite never runs a stale one.

use std::{
    io,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// `TRACKING_BIN` when set, else the newer of `target/debug/tracking` and
/// `target/release/tracking` (under `CARGO_TARGET_DIR` when that is set).
pub fn agent() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TRACKING_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("TRACKING_BIN names {}, which is not a file", path.display()),
            ))
        };
    }
    let target = target_dir();
    let candidates = ["debug", "release"].map(|profile| target.join(profile).join("tracking"));
    newest(&candidates).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no agent binary at {} or {}: build it with `cargo xtask build` (or run the suite \
                 with `cargo xtask test`, which does), or name one in TRACKING_BIN",
                candidates[0].display(),
                candidates[1].display()
            ),
        )
    })
}

/// The workspace's target directory (`CARGO_TARGET_DIR` when set).
pub(crate) fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// The most recently modified of the files that exist.
fn newest(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .filter_map(|path| {
            let metadata = path.metadata().ok().filter(|m| m.is_file())?;
            Some((metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH), path))
        })
        .max_by_key(|&(modified, _)| modified)
        .map(|(_, path)| path.clone())
}

#[cfg(test)]
mod tests {
    use std::{fs::File, time::Duration};

    use super::*;

    fn file_modified_at(path: &Path, when: SystemTime) {
        File::create(path).unwrap().set_modified(when).unwrap();
    }

    #[test]
    fn the_most_recently_built_binary_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let debug = dir.path().join("debug");
        let release = dir.path().join("release");
        let now = SystemTime::now();
        file_modified_at(&debug, now - Duration::from_secs(60));
        file_modified_at(&release, now);
        assert_eq!(
            newest(&[debug.clone(), release.clone()]),
            Some(release.clone())
        );

        file_modified_at(&debug, now + Duration::from_secs(60));
        assert_eq!(newest(&[debug.clone(), release]), Some(debug));
    }

    #[test]
    fn a_missing_binary_is_not_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let debug = dir.path().join("debug");
        let release = dir.path().join("release");
        assert_eq!(newest(&[debug.clone(), release.clone()]), None);
        File::create(&release).unwrap();
        assert_eq!(newest(&[debug, release.clone()]), Some(release));
    }

    #[test]
    fn a_directory_is_not_a_binary() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest(&[dir.path().to_path_buf()]), None);
    }
}
