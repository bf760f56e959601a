//! File helpers for the tests: patterns, positioned I/O and allocation, panicking with the path
//! and the error.

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Size of a data object of a VDI, in bytes.
pub const OBJECT_SIZE: u64 = 4 << 20;

/// One mebibyte, for readable offsets.
pub const MIB: u64 = 1 << 20;

/// Returns `len` pseudo-random bytes determined by `seed` (SplitMix64).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Converts a byte count that the test chose to a `usize`.
pub fn len(n: u64) -> usize {
    usize::try_from(n).expect("length fits usize")
}

/// Creates (or truncates) `path` and sets its size to `size`.
pub fn must_create(path: &Path, size: u64) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.set_len(size)
        .unwrap_or_else(|e| panic!("set_len({size}) {}: {e}", path.display()));
    file
}

/// Opens `path` for reading and writing.
pub fn must_open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} read-write: {e}", path.display()))
}

/// Opens `path` for reading and writing with O_DIRECT.
pub fn must_open_direct(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} O_DIRECT: {e}", path.display()))
}

/// Opens `path` read-only.
pub fn must_open(path: &Path) -> File {
    File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Writes all of `data` at `offset`.
pub fn must_pwrite(file: &File, offset: u64, data: &[u8]) {
    file.write_all_at(data, offset)
        .unwrap_or_else(|e| panic!("pwrite {} bytes at {offset}: {e}", data.len()));
}

/// Reads exactly `n` bytes at `offset`.
pub fn must_pread(file: &File, offset: u64, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    file.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("pread {n} bytes at {offset}: {e}"));
    buf
}

/// Reads the whole file at `path`.
pub fn must_read_all(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Reads `n` bytes at `offset` (both multiples of 512) with O_DIRECT, past the page cache.
pub fn must_pread_direct(path: &Path, offset: u64, n: usize) -> Vec<u8> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} O_DIRECT: {e}", path.display()));
    let mut buf = AlignedBuf::zeroed(n);
    file.read_exact_at(buf.as_mut_slice(), offset)
        .unwrap_or_else(|e| {
            panic!(
                "O_DIRECT pread {n} bytes at {offset} of {}: {e}",
                path.display()
            )
        });
    buf.as_slice().to_vec()
}

/// Reads the whole file at `path` with O_DIRECT (its size must be a multiple of 512).
pub fn must_read_all_direct(path: &Path) -> Vec<u8> {
    must_pread_direct(path, 0, len(must_metadata(path).len()))
}

/// Returns the path as UTF-8, for command lines.
pub fn utf8(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Calls fsync on `file`.
pub fn must_fsync(file: &File) {
    file.sync_all().unwrap_or_else(|e| panic!("fsync: {e}"));
}

/// Returns the bytes allocated to `path` (`st_blocks * 512`).
pub fn allocated(path: &Path) -> u64 {
    must_metadata(path).blocks() * 512
}

/// Returns the metadata of `path`.
pub fn must_metadata(path: &Path) -> std::fs::Metadata {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
}

/// Returns a hash of the whole content of `path`, read in 1 MiB chunks.
pub fn must_content_hash(path: &Path) -> u64 {
    let mut file = must_open(path);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return hasher.finish(),
            Ok(n) => hasher.write(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }
}

/// Panics unless every byte of `data` is zero, naming the first non-zero offset.
pub fn assert_zeros(data: &[u8], base: u64, what: &str) {
    if let Some(i) = data.iter().position(|&b| b != 0) {
        panic!(
            "{what}: byte at offset {} is {:#04x}, expected zero",
            base + i as u64,
            data[i]
        );
    }
}

/// Panics unless `got == want`, naming the first differing offset instead of dumping bytes.
pub fn assert_same_bytes(got: &[u8], want: &[u8], base: u64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at offset {}: got {:#04x}, want {:#04x}",
            base + i as u64,
            got[i],
            want[i]
        );
    }
}

/// Returns the sorted names in directory `dir`.
pub fn must_list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A heap buffer aligned to 4096 bytes, for O_DIRECT.
#[derive(Debug)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Alignment of the buffer.
    pub const ALIGN: usize = 4096;

    /// Returns a zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let raw = vec![0; len + Self::ALIGN];
        let addr = raw.as_ptr() as usize;
        let start = (Self::ALIGN - addr % Self::ALIGN) % Self::ALIGN;
        AlignedBuf { raw, start, len }
    }

    /// Returns a buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(data.len());
        buf.as_mut_slice().copy_from_slice(data);
        buf
    }

    /// Returns the aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// Returns the aligned bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_differs_by_seed() {
        assert_eq!(pattern(7, 100), pattern(7, 100));
        assert_ne!(pattern(7, 100), pattern(8, 100));
        assert_eq!(pattern(7, 13).len(), 13);
    }

    #[test]
    fn aligned_buffer_is_aligned() {
        let buf = AlignedBuf::zeroed(8192);
        assert_eq!(buf.as_slice().as_ptr() as usize % AlignedBuf::ALIGN, 0);
        assert_eq!(buf.as_slice().len(), 8192);
    }
}
