//! Mount-point checks, and the mount table as `/proc/self/mountinfo` shows it.

use crate::error::{Error, Result};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// File-system type of a sheepfs mount in the mount table.
pub const FS_TYPE: &str = "fuse.sheepfs";

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File-system type (`fuse.sheepfs`).
    pub fs_type: String,
    /// Mount source (`sheepfs`).
    pub source: String,
}

/// Parses the text of a `mountinfo` file; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let mount_point = fields.get(4)?;
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some(MountEntry {
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        fs_type: String::from_utf8_lossy(&unescape(fields.get(sep + 1)?)).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields.get(sep + 2)?)).into_owned(),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Returns the mount table of this process's mount namespace.
pub fn mount_table() -> Result<Vec<MountEntry>> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "cannot read",
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_mountinfo(&text))
}

/// Returns the entry mounted on `path` (the last one, if several are stacked).
pub fn find_mount(table: &[MountEntry], path: &Path) -> Option<MountEntry> {
    table.iter().rev().find(|m| m.mount_point == path).cloned()
}

/// Detaches the dead mount a killed sheepfs left on `path` (every access to it fails with
/// ENOTCONN), so a restart after a crash — by systemd, say — needs no manual `umount -l`.
/// A live mount is left alone.
fn detach_dead_sheepfs(path: &Path) -> Result<()> {
    let Some(m) = find_mount(&mount_table()?, path) else {
        return Ok(());
    };
    let dead = matches!(
        std::fs::metadata(path),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN)
    );
    if m.fs_type != FS_TYPE || !dead {
        return Ok(());
    }
    tracing::warn!(mountpoint = %path.display(), "detaching the dead mount of a sheepfs that did not stop cleanly");
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(|e| Error::Mountpoint {
        path: path.to_owned(),
        reason: format!("cannot detach the dead sheepfs mount there: {e}"),
    })
}

/// Checks that `path` can take the mount (an existing empty directory on which nothing is
/// mounted) and returns its absolute, canonical form.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let fail = |reason: String| Error::Mountpoint {
        path: path.to_owned(),
        reason,
    };
    // Look in the mount table first: a dead FUSE mount fails every other check with ENOTCONN.
    let absolute = std::path::absolute(path).map_err(|e| fail(e.to_string()))?;
    detach_dead_sheepfs(&absolute)?;
    if let Some(m) = find_mount(&mount_table()?, &absolute) {
        return Err(fail(format!(
            "something ({} from {}) is already mounted there; unmount it first (umount -l {})",
            m.fs_type,
            m.source,
            absolute.display()
        )));
    }
    let canonical = absolute.canonicalize().map_err(|e| {
        fail(format!(
            "{e}; create it first (mkdir -p {})",
            absolute.display()
        ))
    })?;
    if let Some(m) = find_mount(&mount_table()?, &canonical) {
        return Err(fail(format!("{} is already mounted there", m.fs_type)));
    }
    if !canonical.is_dir() {
        return Err(fail("it is not a directory".into()));
    }
    let mut entries = std::fs::read_dir(&canonical).map_err(|e| fail(e.to_string()))?;
    if entries.next().is_some() {
        return Err(fail(
            "the directory is not empty; use an empty directory".into(),
        ));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
61 22 0:52 / /mnt/with\\040space rw,nosuid,nodev,relatime shared:30 - fuse.sheepfs sheepfs rw,user_id=0
62 22 0:53 / /mnt/b rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn mountinfo_lines_give_point_type_and_source() {
        let t = parse_mountinfo(SAMPLE);
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(t[1].fs_type, FS_TYPE);
        assert_eq!(t[1].source, "sheepfs");
        assert_eq!(t[2].fs_type, "tmpfs");
    }

    #[test]
    fn find_mount_matches_whole_paths_only() {
        let t = parse_mountinfo(SAMPLE);
        assert!(find_mount(&t, Path::new("/mnt/b")).is_some());
        assert!(find_mount(&t, Path::new("/mnt")).is_none());
    }

    #[test]
    fn an_empty_directory_is_accepted_and_a_full_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            check_mountpoint(dir.path()).unwrap(),
            dir.path().canonicalize().unwrap()
        );
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let err = check_mountpoint(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        let missing = dir.path().join("nope");
        let err = check_mountpoint(&missing).unwrap_err().to_string();
        assert!(err.contains("mkdir -p"), "{err}");
    }

    #[test]
    fn a_mounted_directory_is_refused() {
        // `/proc` is a mount point on every Linux system.
        let err = check_mountpoint(Path::new("/proc"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already mounted"), "{err}");
    }
}
