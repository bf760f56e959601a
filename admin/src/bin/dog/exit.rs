//! The one place where `dog` turns errors into exit codes and advice.

use sheep_admin::{Error, WireError};
use std::io::ErrorKind;
use std::path::Path;

/// Other error.
pub const OTHER: u8 = 1;
/// The daemon does not know the VDI or snapshot.
pub const NOT_FOUND: u8 = 3;
/// The name is taken.
pub const EXISTS: u8 = 4;
/// The daemon cannot be reached.
pub const UNREACHABLE: u8 = 5;
/// The daemon refused an argument.
pub const INVALID: u8 = 6;
/// The target is in use.
pub const BUSY: u8 = 7;
/// The store is full.
pub const NO_SPACE: u8 = 8;

/// The exit code of `err` and the message to print, with what to do next.
pub fn describe(err: &anyhow::Error, socket: &Path) -> (u8, String) {
    match err.downcast_ref::<Error>() {
        Some(e) => admin(e, socket),
        None => (OTHER, format!("{err:#}")),
    }
}

fn admin(err: &Error, socket: &Path) -> (u8, String) {
    let at = socket.display();
    match err {
        Error::Connect { source, .. } if source.kind() == ErrorKind::PermissionDenied => (
            UNREACHABLE,
            format!("permission denied on {at}: the admin socket is root-only; run dog as root"),
        ),
        Error::Connect { .. } => (
            UNREACHABLE,
            format!(
                "cannot reach sheepfs at {at}: is `sheepfs` running? \
                 (set --socket or SHEEPFS_SOCKET)"
            ),
        ),
        Error::Closed => (
            UNREACHABLE,
            format!("sheepfs at {at} closed the connection: it may have stopped; see its log"),
        ),
        Error::Timeout => (
            OTHER,
            format!(
                "sheepfs at {at} did not answer in time; the operation may still finish: \
                 check with `dog vdi list` and the daemon log"
            ),
        ),
        Error::Remote(wire) => remote(wire),
        other => (OTHER, other.to_string()),
    }
}

fn remote(err: &WireError) -> (u8, String) {
    let (code, hint) = match err {
        WireError::NotFound(_) => (NOT_FOUND, "`dog vdi list` shows the VDIs and snapshots"),
        WireError::Exists(_) => (EXISTS, "pick another name, or delete the old one first"),
        WireError::Invalid(_) => (INVALID, "check the arguments; `dog --help` has the syntax"),
        WireError::Busy(m) if m.contains("not a member") => (
            BUSY,
            "retry once the host has joined its cluster; `dog cluster info` says what it waits for",
        ),
        WireError::Busy(_) => (BUSY, "close whatever uses it (a VM, a clone) and retry"),
        WireError::NoSpace => (NO_SPACE, "delete unused VDIs or snapshots, or add storage"),
        WireError::Io(_) => (OTHER, "see the sheepfs log for details"),
        WireError::ReadOnly(_) => (INVALID, "snapshots are read-only; clone one to write to it"),
    };
    (code, format!("{err}\nhint: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(err: Error) -> u8 {
        describe(&anyhow::Error::new(err), Path::new("/x.sock")).0
    }

    #[test]
    fn each_wire_error_has_its_exit_code() {
        let cases = [
            (WireError::NotFound("a".into()), NOT_FOUND),
            (WireError::Exists("a".into()), EXISTS),
            (WireError::Invalid("a".into()), INVALID),
            (WireError::Busy("a".into()), BUSY),
            (WireError::NoSpace, NO_SPACE),
            (WireError::Io("a".into()), OTHER),
            (WireError::ReadOnly("a".into()), INVALID),
        ];
        for (wire, want) in cases {
            assert_eq!(code(Error::Remote(wire)), want);
        }
    }

    #[test]
    fn a_missing_socket_says_how_to_fix_it() {
        let err = Error::Connect {
            path: "/x.sock".into(),
            source: std::io::Error::from(ErrorKind::NotFound),
        };
        let (code, msg) = describe(&anyhow::Error::new(err), Path::new("/x.sock"));
        assert_eq!(code, UNREACHABLE);
        assert!(msg.contains("/x.sock") && msg.contains("SHEEPFS_SOCKET"));
    }
}
