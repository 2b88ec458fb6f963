//! What the write-ahead log and the event files share: frames (payload
//! length, u32 LE; CRC-32 of the payload, u32 LE; the payload) in files
//! numbered within a directory (`<number, 20 digits><suffix>`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Length and CRC, before each payload.
pub(super) const HEADER: usize = 8;

/// The header of a frame holding `payload`, and the payload's CRC.
pub(super) fn header(payload: &[u8]) -> ([u8; HEADER], u32) {
    let length = u32::try_from(payload.len()).expect("a frame under 4 GiB");
    let crc = crc32fast::hash(payload);
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&length.to_le_bytes());
    header[4..].copy_from_slice(&crc.to_le_bytes());
    (header, crc)
}

/// An intact frame read back.
pub(super) struct Frame<'a> {
    pub payload: &'a [u8],
    pub crc: u32,
    /// Where the next frame starts.
    pub end: usize,
}

/// The frame at `at`, when the bytes there are a whole, intact one. A
/// payload is never empty, so a zero-filled tail (what a file grown but not
/// written can show after a power cut) is not taken for frames.
pub(super) fn read(bytes: &[u8], at: usize) -> Option<Frame<'_>> {
    let header = bytes.get(at..at + HEADER)?;
    let length = payload_length(bytes, at)?;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let end = at + HEADER + length;
    let payload = bytes.get(at + HEADER..end)?;
    (crc32fast::hash(payload) == crc).then_some(Frame { payload, crc, end })
}

/// Whether a whole, intact frame follows the damaged one at `at`, where
/// its header's length says the next one starts: then the damage is not
/// a write cut short (that is always a file's last frame) but bytes that
/// changed afterwards. Damage to the length itself is not told apart.
pub(super) fn intact_after_damaged(bytes: &[u8], at: usize) -> bool {
    payload_length(bytes, at).is_some_and(|length| read(bytes, at + HEADER + length).is_some())
}

/// The payload length a frame header at `at` states; `None` for zero (no
/// frame: see [`read`]) or where the bytes end first.
fn payload_length(bytes: &[u8], at: usize) -> Option<usize> {
    let length = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().expect("4 bytes"));
    (length != 0).then_some(length as usize)
}

/// The path of file `number` in `dir`.
pub(super) fn path(dir: &Path, number: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{number:020}{suffix}"))
}

/// The numbered files in `dir` (other files ignored), in order.
pub(super) fn numbered(dir: &Path, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let number = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            files.push((number, entry.path()));
        }
    }
    files.sort_unstable();
    Ok(files)
}
