//! The four codecs a record batch may use (attributes bits 0-2), each bounded by a maximum
//! decompressed size so that a small batch cannot expand into gigabytes.
//!
//! - gzip: flate2 (its pure-Rust miniz_oxide backend).
//! - snappy: snap; Java clients (and kafka-python) frame it as xerial's `SnappyOutputStream`
//!   (a magic header, then length-prefixed raw blocks), librdkafka may send a raw block: both
//!   are read.
//! - lz4: lz4_flex's LZ4 frame decoder (Kafka uses the standard frame format for v2 batches).
//! - zstd: the zstd crate's streaming decoder.

use std::io::Read;

use bytes::Bytes;

use crate::DecodeError;

/// A record batch's compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip (1).
    Gzip,
    /// snappy (2).
    Snappy,
    /// lz4 frame (3).
    Lz4,
    /// zstd (4).
    Zstd,
}

impl Compression {
    /// The codec of attribute bits 0-2.
    pub fn from_attributes(attributes: i16) -> Result<Compression, DecodeError> {
        match attributes & 0x07 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            n => Err(DecodeError::Compression(n as u8)),
        }
    }

    /// The attribute bits of this codec.
    pub fn bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// Reads at most `max` bytes from `r`; more is an error.
fn read_bounded(r: impl Read, max: usize, codec: Compression) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Decompress(codec.name()))?;
    if out.len() > max {
        return Err(DecodeError::DecompressedTooLarge(max));
    }
    Ok(out)
}

fn snappy_block(block: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let len = snap::raw::decompress_len(block).map_err(|_| DecodeError::Decompress("snappy"))?;
    if out.len().saturating_add(len) > max {
        return Err(DecodeError::DecompressedTooLarge(max));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| DecodeError::Decompress("snappy"))?;
    Ok(())
}

fn snappy(data: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    if let Some(rest) = data.strip_prefix(XERIAL_MAGIC) {
        // version (4) and compatible version (4), then [int32 length][raw block]*.
        let mut rest = rest.get(8..).ok_or(DecodeError::Decompress("snappy"))?;
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_at_checked(4)
                .ok_or(DecodeError::Decompress("snappy"))?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let (block, tail) = tail
                .split_at_checked(len)
                .ok_or(DecodeError::Decompress("snappy"))?;
            snappy_block(block, max, &mut out)?;
            rest = tail;
        }
        return Ok(out);
    }
    snappy_block(data, max, &mut out)?;
    Ok(out)
}

/// Decompresses a batch's records section, refusing more than `max` bytes of output.
pub fn decompress(codec: Compression, data: &[u8], max: usize) -> Result<Bytes, DecodeError> {
    let out = match codec {
        Compression::None => {
            if data.len() > max {
                return Err(DecodeError::DecompressedTooLarge(max));
            }
            data.to_vec()
        }
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(data), max, codec)?,
        Compression::Snappy => snappy(data, max)?,
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), max, codec)?,
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(data)
                .map_err(|_| DecodeError::Decompress("zstd"))?;
            read_bounded(d, max, codec)?
        }
    };
    Ok(Bytes::from(out))
}

/// Compresses with `codec` (what a client does; used by tests and the benchmark's checks).
pub fn compress(codec: Compression, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(data)
            .unwrap_or_default(),
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        Compression::Zstd => zstd::stream::encode_all(data, 1).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_bombs_are_refused() {
        let data = vec![b'a'; 100_000];
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = compress(c, &data);
            assert_eq!(decompress(c, &packed, 100_000).unwrap(), &data[..], "{c:?}");
            assert_eq!(
                decompress(c, &packed, 99_999),
                Err(DecodeError::DecompressedTooLarge(99_999)),
                "{c:?}"
            );
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let block = snap::raw::Encoder::new().compress_vec(b"hello").unwrap();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
        framed.extend_from_slice(&block);
        assert_eq!(
            decompress(Compression::Snappy, &framed, 10).unwrap(),
            &b"hello"[..]
        );
        framed.truncate(framed.len() - 1);
        assert!(decompress(Compression::Snappy, &framed, 10).is_err());
    }
}
