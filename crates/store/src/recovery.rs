//! Recovery: replay every segment in order, rebuild the live index, load live payloads.
//!
//! Rules (see FORMAT.md): a damaged tail of the last segment is truncated; a record with a bad
//! CRC but a plausible length in the middle is skipped; an implausible length in a non-last
//! segment ends that segment's scan and recovery goes on with the next segment. Damaged data never
//! makes recovery fail; only I/O errors (a file that cannot be read at all) do.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;

use crate::record::{self, Record};
use crate::{
    Entry, Location, LogDamage, RecoveredMessage, Recovery, RecoveryReport, SegInfo, StoreError,
    io_err, segment_name,
};

pub(crate) struct Recovered {
    pub recovery: Recovery,
    pub segments: BTreeMap<u64, SegInfo>,
    pub msgs: HashMap<u64, Entry>,
    pub next_msg_id: u64,
    pub last_segment: u64,
    pub bytes: u64,
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn recover(log_dir: &Path, clean: bool, load: bool) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let mut ids = Vec::new();
    for entry in fs::read_dir(log_dir).map_err(io_err(log_dir))? {
        let entry = entry.map_err(io_err(log_dir))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_segment_name) {
            Some(id) if id > 0 => ids.push(id),
            _ => tracing::warn!(file = ?name, "ignoring unexpected file in the log directory"),
        }
    }
    ids.sort_unstable();

    let mut report = RecoveryReport {
        segments: ids.len() as u64,
        ..RecoveryReport::default()
    };
    let mut segments: BTreeMap<u64, SegInfo> = BTreeMap::new();
    let mut msgs: HashMap<u64, Entry> = HashMap::new();
    let mut deleted_at: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut next_msg_id = 1u64;
    let mut bytes = 0u64;
    let mut data: Vec<u8> = Vec::new();

    for (i, &seg) in ids.iter().enumerate() {
        let path = log_dir.join(segment_name(seg));
        // One buffer reused for every segment: no fresh (page-faulting) allocation per segment.
        data.clear();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io_err(&path))?;
        let data = &data[..];
        let is_last = i + 1 == ids.len();
        let scan = record::scan(data, |off, rec_len, rec| match rec {
            Record::Publish {
                msg_id,
                queues,
                body_off,
                body,
            } => {
                next_msg_id = next_msg_id.max(msg_id.saturating_add(1));
                let mut qs: Vec<(u64, bool)> = Vec::with_capacity(queues.len());
                for q in queues {
                    if !qs.iter().any(|(x, _)| *x == q) {
                        qs.push((q, false));
                    }
                }
                if qs.is_empty() {
                    msgs.remove(&msg_id);
                    return;
                }
                msgs.insert(
                    msg_id,
                    Entry {
                        segment: seg,
                        record_off: off,
                        body_off: off + body_off,
                        len: body.len() as u32,
                        record_len: rec_len,
                        origin: (seg, off),
                        queues: qs,
                        aliases: Vec::new(),
                    },
                );
            }
            Record::Moved {
                msg_id,
                origin,
                queues,
                body_off,
                body,
            } => {
                next_msg_id = next_msg_id.max(msg_id.saturating_add(1));
                if queues.is_empty() {
                    msgs.remove(&msg_id);
                    return;
                }
                msgs.insert(
                    msg_id,
                    Entry {
                        segment: seg,
                        record_off: off,
                        body_off: off + body_off,
                        len: body.len() as u32,
                        record_len: rec_len,
                        origin,
                        queues,
                        aliases: Vec::new(),
                    },
                );
            }
            Record::Ack { queue, msg_id } => {
                if let Some(e) = msgs.get_mut(&msg_id) {
                    e.queues.retain(|q| q.0 != queue);
                    if e.queues.is_empty() {
                        msgs.remove(&msg_id);
                    }
                }
            }
            Record::Delivered { queue, msg_id } => {
                if let Some(e) = msgs.get_mut(&msg_id) {
                    for q in e.queues.iter_mut().filter(|q| q.0 == queue) {
                        q.1 = true;
                    }
                }
            }
            Record::QueueDeleted { queue } => {
                // Applied lazily below: a pair dies if its queue was deleted after the record
                // that established the pair.
                deleted_at.insert(queue, (seg, off));
            }
            Record::Checkpoint { next_msg_id: n } => next_msg_id = next_msg_id.max(n),
        });
        report.records += scan.records;
        for (off, reason) in scan.corrupt {
            tracing::warn!(segment = seg, offset = off, %reason, "skipping a corrupt record");
            let len = data.get(off as usize..off as usize + 4).map_or(0, |h| {
                u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64 + 8
            });
            report.corrupt.push(LogDamage {
                segment: seg,
                offset: off,
                bytes: len,
                reason,
            });
        }
        let mut size = data.len() as u64;
        if let Some(stop) = scan.stop {
            let damage = LogDamage {
                segment: seg,
                offset: scan.end,
                bytes: size - scan.end,
                reason: stop.to_string(),
            };
            if is_last {
                tracing::warn!(
                    segment = seg,
                    offset = scan.end,
                    dropped_bytes = size - scan.end,
                    reason = %stop,
                    "truncating the torn tail of the last log segment"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(scan.end).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                size = scan.end;
                report.truncated.push(damage);
            } else {
                tracing::warn!(
                    segment = seg,
                    offset = scan.end,
                    unread_bytes = size - scan.end,
                    reason = %stop,
                    "segment scan ended early; continuing with the next segment"
                );
                report.scan_stopped.push(damage);
            }
        }
        bytes += size;
        segments.insert(
            seg,
            SegInfo {
                size,
                live: 0,
                live_bytes: 0,
            },
        );
    }

    if !deleted_at.is_empty() {
        msgs.retain(|_, e| {
            let pos = (e.segment, e.record_off);
            e.queues
                .retain(|(q, _)| deleted_at.get(q).is_none_or(|d| *d < pos));
            !e.queues.is_empty()
        });
    }
    for e in msgs.values() {
        if let Some(s) = segments.get_mut(&e.segment) {
            s.live += 1;
            s.live_bytes += e.record_len;
        }
    }

    let queues = load_payloads(log_dir, &segments, &msgs, clean, load)?;
    report.live_messages = msgs.len() as u64;
    report.next_msg_id = next_msg_id;
    report.duration = started.elapsed();
    tracing::info!(
        segments = report.segments,
        records = report.records,
        live = report.live_messages,
        truncated = report.truncated.len(),
        corrupt = report.corrupt.len(),
        clean,
        ms = report.duration.as_millis() as u64,
        "store recovered"
    );
    Ok(Recovered {
        recovery: Recovery {
            queues,
            clean_shutdown: clean,
            report,
        },
        segments,
        msgs,
        next_msg_id,
        last_segment: ids.last().copied().unwrap_or(0),
        bytes,
    })
}

/// Second pass: read the live payloads. A mostly live segment is read whole and sliced (the
/// slices share one allocation); a mostly dead one gets one read and one allocation per live
/// payload, so dead bytes are not kept in memory.
fn load_payloads(
    log_dir: &Path,
    segments: &BTreeMap<u64, SegInfo>,
    msgs: &HashMap<u64, Entry>,
    clean: bool,
    load: bool,
) -> Result<HashMap<u64, Vec<RecoveredMessage>>, StoreError> {
    let mut by_segment: BTreeMap<u64, Vec<(u64, &Entry)>> = BTreeMap::new();
    for (&id, e) in msgs {
        by_segment.entry(e.segment).or_default().push((id, e));
    }
    /// (origin position, message): sorted by origin to restore publish order.
    type Ordered = Vec<((u64, u64), RecoveredMessage)>;
    let mut per_queue: HashMap<u64, Ordered> = HashMap::new();
    for (seg, entries) in by_segment {
        let path = log_dir.join(segment_name(seg));
        let info = segments.get(&seg).cloned().unwrap_or_default();
        let whole = if !load {
            Some(Bytes::new())
        } else if info.live_bytes * 2 >= info.size {
            Some(Bytes::from(fs::read(&path).map_err(io_err(&path))?))
        } else {
            None
        };
        let file = if whole.is_none() {
            Some(File::open(&path).map_err(io_err(&path))?)
        } else {
            None
        };
        for (id, e) in entries {
            let start = e.body_off as usize;
            let end = start + e.len as usize;
            let payload = match (&whole, &file) {
                // Not loading: the caller reads each payload back by its location.
                (Some(_), _) if !load => Bytes::new(),
                (Some(b), _) if end <= b.len() => b.slice(start..end),
                (_, Some(f)) => {
                    let mut buf = vec![0u8; e.len as usize];
                    f.read_exact_at(&mut buf, e.body_off)
                        .map_err(io_err(&path))?;
                    Bytes::from(buf)
                }
                // Checked in the first pass; the file changed under us. Do not guess.
                _ => continue,
            };
            let location = Location {
                segment: seg,
                offset: e.body_off,
                len: e.len,
            };
            for &(q, delivered) in &e.queues {
                per_queue.entry(q).or_default().push((
                    e.origin,
                    RecoveredMessage {
                        msg_id: id,
                        location,
                        payload: payload.clone(),
                        delivered: delivered || !clean,
                    },
                ));
            }
        }
    }
    Ok(per_queue
        .into_iter()
        .map(|(q, mut v)| {
            v.sort_unstable_by_key(|(origin, m)| (*origin, m.msg_id));
            (q, v.into_iter().map(|(_, m)| m).collect())
        })
        .collect())
}
