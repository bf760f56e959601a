//! `dog vdi check NAME` and `dog cluster check`: the objects are checked batch by batch
//! ([`Request::Check`]), with a progress bar on stderr when it is a terminal (a line per 10%
//! otherwise), then a summary.

use anyhow::bail;
use serde::Serialize;
use sheep_admin::{Client, Reply, Request};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

/// Most objects the daemon checks per request (it also stops after about a second).
const BATCH: u32 = 256;

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The VDI checked (`None`: every VDI).
    pub vdi: Option<String>,
    /// Bad copies were repaired (not `--no-repair`).
    pub repair: bool,
    /// Objects checked.
    pub objects: u64,
    /// Copies looked at.
    pub copies: u64,
    /// Copies found good.
    pub good: u64,
    /// Copies repaired.
    pub repaired: u64,
    /// Objects with no good copy left (ids in hex).
    pub lost: Vec<String>,
    /// Objects that could not be checked, with why.
    pub failed: Vec<Failed>,
}

/// An object that could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failed {
    /// Its id in hex.
    pub oid: String,
    /// Why.
    pub error: String,
}

impl Summary {
    /// An error (exit code 1) when objects are lost or could not be checked.
    pub fn verdict(&self) -> anyhow::Result<()> {
        if !self.lost.is_empty() {
            bail!("{} object(s) have no good copy left", self.lost.len());
        }
        if !self.failed.is_empty() {
            bail!("{} object(s) could not be checked", self.failed.len());
        }
        Ok(())
    }
}

fn oid(o: u64) -> String {
    format!("{o:016x}")
}

/// Checks every object of `vdi` (of every VDI with `None`) through `client`.
pub fn run(
    client: &mut Client,
    vdi: Option<String>,
    repair: bool,
    progress: &mut Progress,
) -> anyhow::Result<Summary> {
    let mut s = Summary {
        vdi: vdi.clone(),
        repair,
        ..Summary::default()
    };
    let mut after = None;
    loop {
        let req = Request::Check {
            vdi: vdi.clone(),
            repair,
            after,
            max: BATCH,
        };
        let b = match client.call(&req)? {
            Reply::Check(b) => b,
            other => bail!("sheepfs sent an unexpected reply ({other:?}); are dog and sheepfs the same version?"),
        };
        s.objects += b.objects;
        s.copies += b.copies;
        s.good += b.good;
        s.repaired += b.repaired;
        s.lost.extend(b.lost.iter().map(|o| oid(*o)));
        s.failed.extend(b.failed.iter().map(|(o, e)| Failed {
            oid: oid(*o),
            error: e.clone(),
        }));
        progress.update(b.done, b.total);
        if b.finished || b.last.is_none() || b.last == after {
            break;
        }
        after = b.last;
    }
    progress.finish();
    Ok(s)
}

/// The summary as text.
pub fn render(s: &Summary) -> String {
    let what = s.vdi.as_deref().unwrap_or("every VDI");
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut out = format!(
        "{what}: {} checked, {} ({} good), {} {}, {} lost\n",
        plural(s.objects, "object", "objects"),
        plural(s.copies, "copy", "copies"),
        s.good,
        plural(s.repaired, "copy", "copies"),
        if s.repair {
            "repaired"
        } else {
            "to repair (--no-repair)"
        },
        plural(
            u64::try_from(s.lost.len()).unwrap_or(u64::MAX),
            "object",
            "objects"
        ),
    );
    for o in &s.lost {
        let _ = writeln!(out, "  lost: object {o} has no good copy left");
    }
    for f in &s.failed {
        let _ = writeln!(out, "  not checked: object {}: {}", f.oid, f.error);
    }
    out
}

/// Progress on stderr: a bar on a terminal, else a line per 10%.
pub struct Progress {
    tty: bool,
    out: Box<dyn Write>,
    /// The last tenth reported (lines) or the last bar drawn.
    last: Option<u64>,
    drawn: bool,
}

impl Progress {
    /// Progress on stderr.
    pub fn stderr() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            out: Box::new(std::io::stderr()),
            last: None,
            drawn: false,
        }
    }

    /// Progress written to `out` (tests).
    #[cfg(test)]
    fn to(out: Box<dyn Write>, tty: bool) -> Progress {
        Progress {
            tty,
            out,
            last: None,
            drawn: false,
        }
    }

    /// `done` of `total` objects are checked.
    pub fn update(&mut self, done: u64, total: u64) {
        let done = done.min(total);
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        if self.tty {
            if self.last == Some(percent) && self.drawn {
                return;
            }
            let width = 40;
            let filled = usize::try_from(percent * width / 100).unwrap_or(0);
            let bar = format!(
                "\r[{}{}] {percent:>3}% {done}/{total} objects",
                "#".repeat(filled),
                ".".repeat(usize::try_from(width).unwrap_or(40) - filled)
            );
            let _ = self.out.write_all(bar.as_bytes());
            let _ = self.out.flush();
            self.drawn = true;
            self.last = Some(percent);
        } else {
            let tenth = percent / 10;
            if self.last.is_some_and(|l| l >= tenth) || (tenth == 0 && total > 0) {
                return;
            }
            let _ = writeln!(self.out, "checked {}% ({done}/{total} objects)", tenth * 10);
            self.last = Some(tenth);
        }
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.tty && self.drawn {
            let _ = self.out.write_all(b"\n");
            let _ = self.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn without_a_terminal_progress_is_a_line_per_tenth() {
        let buf = Buf::default();
        let mut p = Progress::to(Box::new(buf.clone()), false);
        for done in 0..=100 {
            p.update(done * 3, 300);
        }
        p.finish();
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10, "{text}");
        assert_eq!(lines[0], "checked 10% (30/300 objects)");
        assert_eq!(lines[9], "checked 100% (300/300 objects)");
    }

    #[test]
    fn on_a_terminal_progress_is_one_bar_redrawn() {
        let buf = Buf::default();
        let mut p = Progress::to(Box::new(buf.clone()), true);
        p.update(1, 4);
        p.update(1, 4);
        p.update(4, 4);
        p.finish();
        let text = buf.text();
        assert_eq!(text.matches('\r').count(), 2, "{text:?}");
        assert!(text.ends_with("100% 4/4 objects\n"), "{text:?}");
        // Nothing to check: one line saying so.
        let buf = Buf::default();
        let mut p = Progress::to(Box::new(buf.clone()), false);
        p.update(0, 0);
        assert_eq!(buf.text(), "checked 100% (0/0 objects)\n");
    }

    #[test]
    fn the_summary_counts_and_lists_what_is_lost() {
        let s = Summary {
            vdi: Some("vm0".into()),
            repair: true,
            objects: 3,
            copies: 9,
            good: 7,
            repaired: 1,
            lost: vec![oid(0x7c_2b25_0000_0001)],
            failed: vec![],
        };
        let text = render(&s);
        assert!(
            text.starts_with(
                "vm0: 3 objects checked, 9 copies (7 good), 1 copy repaired, 1 object lost\n"
            ),
            "{text}"
        );
        assert!(text.contains("lost: object 007c2b2500000001"), "{text}");
        assert!(s.verdict().is_err());
        assert!(Summary::default().verdict().is_ok());
    }
}
