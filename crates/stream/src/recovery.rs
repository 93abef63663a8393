//! Opening a stream directory: every segment is scanned once to rebuild its sparse index;
//! the last segment's torn tail is truncated.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::record::{Decoded, decode};
use crate::segment::{Segment, file_name, parse_name};
use crate::{StreamError, io_err};

/// What [`crate::Stream::open`] found.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OpenReport {
    /// Segment files kept.
    pub segments: u64,
    /// Records found.
    pub records: u64,
    /// Bytes cut off the end of the last segment (a record torn by a crash).
    pub truncated_bytes: u64,
    /// Older segments whose scan stopped at a damaged record (the rest of them is unread).
    pub damaged_segments: Vec<u64>,
    /// How long the scan took.
    pub duration: Duration,
}

/// Scans the segments of `dir`.
pub(crate) fn recover(
    dir: &Path,
    interval: u64,
) -> Result<(BTreeMap<u64, Segment>, OpenReport), StreamError> {
    let started = Instant::now();
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_name(e.file_name().to_str()?))
        .collect();
    bases.sort_unstable();
    let mut report = OpenReport::default();
    let mut segments = BTreeMap::new();
    let mut expected: Option<u64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let path = dir.join(file_name(base));
        if expected.is_some_and(|e| base < e) {
            // Overlaps the previous segment: not something this writer produces.
            tracing::warn!(path = %path.display(), "stream: skipping a segment that overlaps the previous one");
            report.damaged_segments.push(base);
            continue;
        }
        let (seg, valid_end, file_len, damaged) = scan(&path, base, interval)?;
        if damaged || valid_end < file_len {
            if last {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(valid_end).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                report.truncated_bytes += file_len - valid_end;
                tracing::warn!(path = %path.display(), bytes = file_len - valid_end, "stream: truncated a torn tail (never confirmed)");
            } else {
                report.damaged_segments.push(base);
                tracing::warn!(path = %path.display(), at = valid_end, "stream: a segment's scan stopped at a damaged record");
            }
        }
        if seg.records() == 0 && !last {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        report.records += seg.records();
        expected = Some(seg.next);
        segments.insert(seg.base, seg);
    }
    report.segments = segments.len() as u64;
    report.duration = started.elapsed();
    Ok((segments, report))
}

/// Reads one segment with a bounded buffer: (segment, end of the valid records, file length,
/// whether a damaged record was met).
fn scan(path: &Path, base: u64, interval: u64) -> Result<(Segment, u64, u64, bool), StreamError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut seg = Segment::new(base);
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut start = 0usize;
    let mut pos = 0u64;
    let mut eof = false;
    loop {
        match decode(&buf[start..]) {
            Decoded::Record {
                size, offset, ts, ..
            } => {
                if offset != seg.next {
                    return Ok((seg, pos, file_len, true));
                }
                seg.push(offset, ts, size as u64, interval);
                start += size;
                pos += size as u64;
            }
            Decoded::Partial { need } => {
                if eof || pos + need as u64 > file_len {
                    return Ok((seg, pos, file_len, pos < file_len));
                }
                buf.drain(..start);
                start = 0;
                let want = need.max(1 << 20);
                let have = buf.len();
                buf.resize(have + want, 0);
                let n = read_full(&mut file, &mut buf[have..]).map_err(io_err(path))?;
                buf.truncate(have + n);
                eof = n < want;
            }
            Decoded::Damaged(_) => return Ok((seg, pos, file_len, true)),
        }
    }
}

fn read_full(file: &mut File, mut buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while !buf.is_empty() {
        match file.read(buf) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                buf = &mut buf[k..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
