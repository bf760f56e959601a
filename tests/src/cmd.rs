//! Running external commands, with panics that show what they printed.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use crate::env::which;

/// Builds a command for `prog`, resolved on `PATH` and in the sbin directories.
pub fn command(prog: &str) -> Command {
    match which(prog) {
        Some(path) => Command::new(path),
        None => Command::new(prog),
    }
}

/// Runs `prog args…` to completion and returns its output, whatever its exit status.
pub fn run<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> Output {
    command(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

/// Formats a command line and its output for a panic message.
pub fn describe(what: &str, out: &Output) -> String {
    format!(
        "`{what}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `prog args…` and returns its stdout; panics with stdout and stderr unless it exits 0.
pub fn must_run<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> String {
    let out = run(prog, args);
    let line = command_line(prog, args);
    assert!(out.status.success(), "{}", describe(&line, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Joins a program and its arguments into one printable line.
pub fn command_line<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> String {
    let mut line = prog.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

/// Runs `qemu-io -f raw [-t none] -c CMD… FILE` and returns its output.
///
/// `direct` opens the image with `-t none` (O_DIRECT). Panics unless it exits 0 and no command
/// reports a failure ("Pattern verification failed", "write failed: …"), since older qemu-io
/// versions exit 0 after a failed command.
pub fn must_qemu_io(file: &Path, direct: bool, cmds: &[&str]) -> String {
    let mut args: Vec<String> = vec!["-f".into(), "raw".into()];
    if direct {
        args.extend(["-t".into(), "none".into()]);
    }
    for cmd in cmds {
        args.extend(["-c".into(), (*cmd).to_owned()]);
    }
    args.push(file.display().to_string());
    let out = run("qemu-io", &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = command_line("qemu-io", &args);
    assert!(
        out.status.success() && !text.contains("failed"),
        "{}",
        describe(&line, &out)
    );
    text
}
