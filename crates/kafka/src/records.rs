//! Record batches, magic v2 (KIP-98): a batch header, a CRC-32C over everything after the CRC
//! field, and varint-framed records with keys, values and headers, optionally compressed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::compression::{Compression, compress, decompress};
use crate::wire::{Reader, put_varint, put_varlong, varint_len};

/// Bytes of a batch header up to and including the record count.
pub const BATCH_HEADER: usize = 61;
/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count of one byte each.
const MIN_RECORD: usize = 7;

/// One record of a batch, with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The batch's base offset plus the record's offset delta.
    pub offset: i64,
    /// Milliseconds since the epoch (the batch's base timestamp plus the record's delta).
    pub timestamp: i64,
    /// The key (null when absent).
    pub key: Option<Bytes>,
    /// The value (null for a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order: a key and a nullable value.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A decoded record batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBatch {
    /// The offset of the first record as the producer numbered it (0 from producers).
    pub base_offset: i64,
    /// The batch attributes (compression, timestamp type, transactional, control).
    pub attributes: i16,
    /// The producer id (-1 without idempotence).
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// The first sequence number.
    pub base_sequence: i32,
    /// The records.
    pub records: Vec<Record>,
}

impl RecordBatch {
    /// True for a control batch (transaction markers), which carries no user records.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// Decodes every batch of a produce request's `records` field. `max_decompressed` bounds
/// each compressed batch's expansion.
pub fn decode_batches(
    data: Bytes,
    max_decompressed: usize,
) -> Result<Vec<RecordBatch>, DecodeError> {
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        if r.remaining() < 12 {
            return Err(DecodeError::Batch("trailing bytes after the last batch"));
        }
        let base_offset = r.i64()?;
        let len = r.i32()?;
        if len < (BATCH_HEADER - 12) as i32 || len as usize > r.remaining() {
            return Err(DecodeError::InvalidLength(i64::from(len), "record batch"));
        }
        let body = r.take(len as usize, "record batch")?;
        out.push(decode_batch_body(base_offset, body, max_decompressed)?);
    }
    Ok(out)
}

fn decode_batch_body(
    base_offset: i64,
    body: Bytes,
    max_decompressed: usize,
) -> Result<RecordBatch, DecodeError> {
    let mut r = Reader::new(body);
    let _leader_epoch = r.i32()?;
    let magic = r.i8()?;
    if magic != 2 {
        return Err(DecodeError::Magic(magic));
    }
    let crc = r.u32()?;
    let checked = r.clone().rest();
    if crc32c::crc32c(&checked) != crc {
        return Err(DecodeError::Crc);
    }
    let attributes = r.i16()?;
    let _last_offset_delta = r.i32()?;
    let base_timestamp = r.i64()?;
    let _max_timestamp = r.i64()?;
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let base_sequence = r.i32()?;
    let count = r.i32()?;
    if count < 0 {
        return Err(DecodeError::InvalidLength(i64::from(count), "record count"));
    }
    let codec = Compression::from_attributes(attributes)?;
    let data = match codec {
        Compression::None => r.rest(),
        c => decompress(c, &r.rest(), max_decompressed)?,
    };
    let mut r = Reader::new(data);
    if (count as usize).saturating_mul(MIN_RECORD) > r.remaining() {
        return Err(DecodeError::InvalidLength(i64::from(count), "record count"));
    }
    let mut records = Vec::with_capacity(count as usize);
    for _ in 0..count {
        records.push(decode_record(&mut r, base_offset, base_timestamp)?);
    }
    if r.remaining() > 0 {
        return Err(DecodeError::Batch("bytes after the last record"));
    }
    Ok(RecordBatch {
        base_offset,
        attributes,
        producer_id,
        producer_epoch,
        base_sequence,
        records,
    })
}

fn varbytes(r: &mut Reader, what: &'static str) -> Result<Option<Bytes>, DecodeError> {
    let len = r.varint()?;
    if len < 0 {
        return Ok(None);
    }
    r.take(len as usize, what).map(Some)
}

fn decode_record(r: &mut Reader, base_offset: i64, base_ts: i64) -> Result<Record, DecodeError> {
    let len = r.varint()?;
    if len < 0 {
        return Err(DecodeError::InvalidLength(i64::from(len), "record"));
    }
    let mut r = Reader::new(r.take(len as usize, "record")?);
    let _attributes = r.i8()?;
    let ts_delta = r.varlong()?;
    let offset_delta = r.varint()?;
    let key = varbytes(&mut r, "record key")?;
    let value = varbytes(&mut r, "record value")?;
    let n = r.varint()?;
    if n < 0 || (n as usize).saturating_mul(2) > r.remaining() {
        return Err(DecodeError::InvalidLength(i64::from(n), "record headers"));
    }
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let key =
            varbytes(&mut r, "header key")?.ok_or(DecodeError::InvalidLength(-1, "header key"))?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| DecodeError::InvalidString)?;
        headers.push((key, varbytes(&mut r, "header value")?));
    }
    if r.remaining() > 0 {
        return Err(DecodeError::Batch("bytes after a record's headers"));
    }
    Ok(Record {
        offset: base_offset.wrapping_add(i64::from(offset_delta)),
        timestamp: base_ts.wrapping_add(ts_delta),
        key,
        value,
        headers,
    })
}

fn put_varbytes(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.put_slice(b);
        }
    }
}

/// Encodes one record relative to the batch's base offset and timestamp.
fn encode_record(out: &mut BytesMut, rec: &Record, base_offset: i64, base_ts: i64) {
    let mut body = BytesMut::new();
    body.put_i8(0);
    put_varlong(&mut body, rec.timestamp.wrapping_sub(base_ts));
    put_varint(&mut body, rec.offset.wrapping_sub(base_offset) as i32);
    put_varbytes(&mut body, rec.key.as_deref());
    put_varbytes(&mut body, rec.value.as_deref());
    put_varint(&mut body, rec.headers.len() as i32);
    for (k, v) in &rec.headers {
        put_varbytes(&mut body, Some(k.as_bytes()));
        put_varbytes(&mut body, v.as_deref());
    }
    out.reserve(varint_len(body.len() as i32) + body.len());
    put_varint(out, body.len() as i32);
    out.put_slice(&body);
}

/// Appends one batch holding `records` (at least one, offsets ascending) with `codec`.
pub fn encode_batch(out: &mut BytesMut, records: &[Record], codec: Compression) {
    encode_batch_with(out, records, codec, -1, -1, -1);
}

/// [`encode_batch`] with the producer fields of an idempotent producer.
pub fn encode_batch_with(
    out: &mut BytesMut,
    records: &[Record],
    codec: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return;
    };
    let base_offset = first.offset;
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut recs = BytesMut::new();
    for r in records {
        encode_record(&mut recs, r, base_offset, base_ts);
    }
    let payload = match codec {
        Compression::None => recs.to_vec(),
        c => compress(c, &recs),
    };
    let start = out.len();
    out.reserve(BATCH_HEADER + payload.len());
    out.put_i64(base_offset);
    out.put_i32((BATCH_HEADER - 12 + payload.len()) as i32);
    out.put_i32(-1); // partition leader epoch
    out.put_i8(2);
    let crc_at = out.len();
    out.put_u32(0);
    out.put_i16(codec.bits());
    out.put_i32((last.offset - base_offset) as i32);
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(producer_id);
    out.put_i16(producer_epoch);
    out.put_i32(base_sequence);
    out.put_i32(records.len() as i32);
    out.put_slice(&payload);
    let crc = crc32c::crc32c(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(out.len() - start, BATCH_HEADER + payload.len());
}

/// The encoded size of `rec` alone in an uncompressed batch (for fetch size accounting).
pub fn record_size(rec: &Record) -> usize {
    let mut n = 1 + 10 + 5;
    n += 5 + rec.key.as_ref().map_or(0, |k| k.len());
    n += 5 + rec.value.as_ref().map_or(0, |v| v.len());
    n += 5;
    for (k, v) in &rec.headers {
        n += 10 + k.len() + v.as_ref().map_or(0, |v| v.len());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        (0..3)
            .map(|i| Record {
                offset: 10 + i,
                timestamp: 1_700_000_000_000 + i,
                key: (i != 1).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![i as u8; 100])),
                headers: vec![
                    ("h".into(), Some(Bytes::from_static(b"v"))),
                    ("n".into(), None),
                ],
            })
            .collect()
    }

    #[test]
    fn batches_round_trip_with_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = BytesMut::new();
            encode_batch(&mut b, &sample(), c);
            encode_batch(&mut b, &sample()[..1], Compression::None);
            let batches = decode_batches(b.freeze(), 1 << 20).unwrap();
            assert_eq!(batches.len(), 2);
            assert_eq!(batches[0].records, sample(), "{c:?}");
            assert_eq!(batches[0].base_offset, 10);
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut b = BytesMut::new();
        encode_batch(&mut b, &sample(), Compression::None);
        let n = b.len();
        b[n - 3] ^= 1;
        assert_eq!(decode_batches(b.freeze(), 1 << 20), Err(DecodeError::Crc));
    }

    #[test]
    fn a_huge_record_count_is_refused_before_allocating() {
        let mut b = BytesMut::new();
        encode_batch(&mut b, &sample()[..1], Compression::None);
        // Record count at byte 57; set it to i32::MAX and fix the CRC.
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_batches(b.freeze(), 1 << 20),
            Err(DecodeError::InvalidLength(..))
        ));
    }
}
