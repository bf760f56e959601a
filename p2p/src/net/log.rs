//! The durable log file: every delivered entry, framed and checksummed by [`crate::codec`],
//! appended and fdatasync'ed before the application sees it.
//!
//! ```text
//! record*   where record = codec envelope (magic "SLOG", crc32c of the payload) around one entry
//! ```
//!
//! On open the file is read back record by record; the first torn (short) or corrupt (bad
//! header, bad checksum, undecodable) record ends the log and the file is truncated there, so the
//! next append continues a valid file. The file is locked (`flock`-style) while open, so two
//! drivers cannot share one log.

use crate::codec::{self, Kind, HEADER_LEN};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// Envelope of one log record.
pub const LOG_KIND: Kind = Kind {
    magic: 0x474f_4c53, // "SLOG" little-endian
    major: 1,
    minor: 0,
};

/// Largest payload of one record (an entry holding an application command).
pub const MAX_RECORD: u64 = 16 << 20;

/// What [`LogFile::open`] found.
#[derive(Debug)]
pub struct Opened<T> {
    /// The records read back, in file order.
    pub records: Vec<T>,
    /// Bytes cut off the end because they were torn or corrupt (0 for a clean file).
    pub truncated: u64,
}

/// An append-only file of records of type `T`.
#[derive(Debug)]
pub struct LogFile<T> {
    file: File,
    path: PathBuf,
    len: u64,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> LogFile<T> {
    /// Opens (creating if needed) `path`, reads every valid record, truncates a torn or corrupt
    /// tail, and locks the file for this process.
    pub fn open(path: &Path) -> Result<(Self, Opened<T>)> {
        Self::open_checked(path, |_| true)
    }

    /// Like [`LogFile::open`], and the first record `accept` refuses (e.g. a seq that does not
    /// follow the previous one) is treated as corrupt: it and everything after it are cut off.
    pub fn open_checked(path: &Path, accept: impl FnMut(&T) -> bool) -> Result<(Self, Opened<T>)> {
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked(path.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        if created {
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        let file_len = file.metadata()?.len();
        let (records, good) = read_records::<T>(&mut file, file_len, accept)?;
        let truncated = file_len - good;
        if truncated > 0 {
            tracing::warn!(
                path = %path.display(),
                good,
                truncated,
                "log: torn or corrupt tail cut off"
            );
            file.set_len(good)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(good))?;
        Ok((
            LogFile {
                file,
                path: path.to_path_buf(),
                len: good,
                _t: PhantomData,
            },
            Opened { records, truncated },
        ))
    }

    /// Appends `rec` (not yet durable: call [`LogFile::sync`]).
    pub fn append(&mut self, rec: &T) -> Result<()> {
        let bytes = codec::encode(LOG_KIND, rec, MAX_RECORD)?;
        if let Err(e) = self.file.write_all(&bytes) {
            // Leave no partial record behind for the next append to follow.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(e.into());
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes every appended record durable (fdatasync).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }

    /// Throws every record away (durably).
    pub fn clear(&mut self) -> Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    /// Current length of the file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads records from the start; returns them and the length of the valid prefix.
fn read_records<T: DeserializeOwned>(
    file: &mut File,
    file_len: u64,
    mut accept: impl FnMut(&T) -> bool,
) -> Result<(Vec<T>, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut r = std::io::BufReader::with_capacity(1 << 16, file);
    let mut out = Vec::new();
    let mut good = 0u64;
    let mut header = [0u8; HEADER_LEN];
    loop {
        if good == file_len {
            break;
        }
        if !read_full(&mut r, &mut header)? {
            tracing::warn!(offset = good, "log: torn record header");
            break;
        }
        let h = match codec::decode_header(LOG_KIND, &header, MAX_RECORD) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(offset = good, error = %e, "log: corrupt record header");
                break;
            }
        };
        let len = u64::from(h.len);
        if good + HEADER_LEN as u64 + len > file_len {
            tracing::warn!(offset = good, "log: torn record payload");
            break;
        }
        let Ok(ulen) = usize::try_from(h.len) else {
            break;
        };
        let mut rec = Vec::with_capacity(HEADER_LEN + ulen);
        rec.extend_from_slice(&header);
        rec.resize(HEADER_LEN + ulen, 0);
        if !read_full(&mut r, &mut rec[HEADER_LEN..])? {
            tracing::warn!(offset = good, "log: torn record payload");
            break;
        }
        match codec::decode::<T>(LOG_KIND, &rec, MAX_RECORD) {
            Ok(v) if accept(&v) => out.push(v),
            Ok(_) => {
                tracing::warn!(offset = good, "log: record out of sequence");
                break;
            }
            Err(e) => {
                tracing::warn!(offset = good, error = %e, "log: corrupt record");
                break;
            }
        }
        good += rec.len() as u64;
    }
    Ok((out, good))
}

/// Fills `buf`; false on a clean or partial end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// fsyncs a directory so a newly created file's name is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        seq: u64,
        data: Vec<u8>,
    }

    fn rec(seq: u64) -> Rec {
        Rec {
            seq,
            data: vec![u8::try_from(seq % 251).unwrap(); usize::try_from(seq * 7 % 100).unwrap()],
        }
    }

    fn write_n(path: &Path, n: u64) -> u64 {
        let (mut log, opened) = LogFile::<Rec>::open(path).unwrap();
        assert!(opened.records.is_empty());
        for s in 1..=n {
            log.append(&rec(s)).unwrap();
        }
        log.sync().unwrap();
        log.len()
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let len = write_n(&path, 10);
        let (mut log, opened) = LogFile::<Rec>::open(&path).unwrap();
        assert_eq!(opened.truncated, 0);
        assert_eq!(opened.records, (1..=10).map(rec).collect::<Vec<_>>());
        assert_eq!(log.len(), len);
        log.append(&rec(11)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_log, opened) = LogFile::<Rec>::open(&path).unwrap();
        assert_eq!(opened.records, (1..=11).map(rec).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_is_truncated_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_n(&path, 3);
        let full = std::fs::read(&path).unwrap();
        let (_, two) = {
            let p2 = dir.path().join("two");
            let l = write_n(&p2, 2);
            (p2, l)
        };
        let two = usize::try_from(two).unwrap();
        // Cut the third record anywhere inside: two records remain, the file is cut back.
        for cut in two + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (log, opened) = LogFile::<Rec>::open(&path).unwrap();
            assert_eq!(opened.records, vec![rec(1), rec(2)], "cut at {cut}");
            assert_eq!(opened.truncated, (cut - two) as u64);
            assert_eq!(log.len(), two as u64);
            drop(log);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), two as u64);
        }
    }

    #[test]
    fn a_corrupt_record_stops_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_n(&path, 5);
        let mut bytes = std::fs::read(&path).unwrap();
        let one = codec::encode(LOG_KIND, &rec(1), MAX_RECORD).unwrap().len();
        let two = codec::encode(LOG_KIND, &rec(2), MAX_RECORD).unwrap().len();
        // Flip a payload byte of the third record.
        bytes[one + two + HEADER_LEN + 3] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (mut log, opened) = LogFile::<Rec>::open(&path).unwrap();
        assert_eq!(opened.records, vec![rec(1), rec(2)]);
        assert_eq!(log.len(), (one + two) as u64);
        // Appending continues a valid file.
        log.append(&rec(3)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_log, opened) = LogFile::<Rec>::open(&path).unwrap();
        assert_eq!(opened.records, vec![rec(1), rec(2), rec(3)]);
        assert_eq!(opened.truncated, 0);
    }

    #[test]
    fn a_refused_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = LogFile::<Rec>::open(&path).unwrap();
        for s in [1, 2, 4, 5] {
            log.append(&rec(s)).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let mut prev = 0;
        let (_log, opened) = LogFile::<Rec>::open_checked(&path, |r: &Rec| {
            let ok = r.seq == prev + 1;
            prev = r.seq;
            ok
        })
        .unwrap();
        assert_eq!(opened.records, vec![rec(1), rec(2)]);
        assert!(opened.truncated > 0);
    }

    #[test]
    fn a_corrupt_header_stops_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_n(&path, 3);
        let mut bytes = std::fs::read(&path).unwrap();
        let one = codec::encode(LOG_KIND, &rec(1), MAX_RECORD).unwrap().len();
        bytes[one] ^= 0xff; // magic of the second record
        std::fs::write(&path, &bytes).unwrap();
        let (_log, opened) = LogFile::<Rec>::open(&path).unwrap();
        assert_eq!(opened.records, vec![rec(1)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), one as u64);
    }

    #[test]
    fn clear_empties_the_file_and_a_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_n(&path, 4);
        let (mut log, opened) = LogFile::<Rec>::open(&path).unwrap();
        assert_eq!(opened.records.len(), 4);
        assert!(matches!(LogFile::<Rec>::open(&path), Err(Error::Locked(_))));
        log.clear().unwrap();
        assert!(log.is_empty());
        log.append(&rec(1)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_log, opened) = LogFile::<Rec>::open(&path).unwrap();
        assert_eq!(opened.records, vec![rec(1)]);
    }
}
