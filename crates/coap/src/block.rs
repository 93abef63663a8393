//! Block-wise transfers (RFC 7959): the Block1/Block2 option value, the
//! reassembly of a request body sent in Block1 blocks, and the slicing of a
//! response body into Block2 blocks.

use bytes::{Bytes, BytesMut};

/// A Block1 or Block2 option value: block number, more flag, size exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Block number (20 bits).
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: the block holds `2^(szx + 4)` bytes (0 to 6; 7 is BERT, TCP only).
    pub szx: u8,
}

/// Why a block cannot be taken.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The option value is longer than 3 bytes or uses SZX 7 (4.00).
    #[error("malformed block option")]
    Malformed,
    /// The block does not continue the body received so far (4.08).
    #[error("block {num} does not continue the body of {have} bytes")]
    Incomplete {
        /// Its number.
        num: u32,
        /// Bytes received so far.
        have: usize,
    },
    /// The body would exceed the limit (4.13 with Size1).
    #[error("body larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
}

impl Block {
    /// Largest size exponent over UDP (1024-byte blocks).
    pub const MAX_SZX: u8 = 6;

    /// Reads an option value.
    pub fn decode(v: &[u8]) -> Result<Block, BlockError> {
        let n = crate::option::parse_uint(v)
            .filter(|_| v.len() <= 3)
            .ok_or(BlockError::Malformed)?;
        let szx = (n & 7) as u8;
        if szx == 7 {
            return Err(BlockError::Malformed);
        }
        Ok(Block {
            num: n >> 4,
            more: n & 8 != 0,
            szx,
        })
    }

    /// The option value.
    pub fn encode(self) -> Bytes {
        crate::option::uint_value(
            ((self.num & 0xf_ffff) << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 7),
        )
    }

    /// Bytes per block.
    pub fn size(self) -> usize {
        1 << (u32::from(self.szx.min(Self::MAX_SZX)) + 4)
    }

    /// Byte offset of this block in the body.
    pub fn offset(self) -> usize {
        self.num as usize * self.size()
    }
}

/// Block `num` of size `2^(szx+4)` of `body`, with the Block2 value
/// describing it; `None` when the block starts past the end.
pub fn slice(body: &Bytes, num: u32, szx: u8) -> Option<(Bytes, Block)> {
    let szx = szx.min(Block::MAX_SZX);
    let probe = Block {
        num,
        more: false,
        szx,
    };
    let start = probe.offset();
    if start > body.len() || (start == body.len() && start != 0) {
        return None;
    }
    let end = (start + probe.size()).min(body.len());
    Some((
        body.slice(start..end),
        Block {
            more: end < body.len(),
            ..probe
        },
    ))
}

/// What feeding a block achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More blocks are expected: answer 2.31 Continue.
    Continue,
    /// The body is complete.
    Complete(Bytes),
}

/// Reassembles one request body from Block1 blocks, in order.
#[derive(Debug)]
pub struct Assembler {
    body: BytesMut,
    max: usize,
}

impl Assembler {
    /// An empty body that may grow to `max` bytes.
    pub fn new(max: usize) -> Self {
        Assembler {
            body: BytesMut::new(),
            max,
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Takes the next block. A block must start where the body ends (the
    /// client may lower its block size between blocks); a block with the
    /// more flag must be full.
    pub fn feed(&mut self, block: Block, payload: &[u8]) -> Result<Progress, BlockError> {
        if block.offset() != self.body.len() || (block.more && payload.len() != block.size()) {
            return Err(BlockError::Incomplete {
                num: block.num,
                have: self.body.len(),
            });
        }
        if self.body.len() + payload.len() > self.max {
            return Err(BlockError::TooLarge { max: self.max });
        }
        self.body.extend_from_slice(payload);
        if block.more {
            Ok(Progress::Continue)
        } else {
            Ok(Progress::Complete(std::mem::take(&mut self.body).freeze()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_round_trip() {
        let b = Block {
            num: 5,
            more: true,
            szx: 6,
        };
        assert_eq!(Block::decode(&b.encode()), Ok(b));
        assert_eq!(b.size(), 1024);
        assert_eq!(b.offset(), 5120);
        assert_eq!(Block::decode(&[0x0f]), Err(BlockError::Malformed));
        assert_eq!(Block::decode(&[1, 2, 3, 4]), Err(BlockError::Malformed));
    }

    #[test]
    fn slicing_and_reassembly_agree() {
        let body = Bytes::from((0..3000u32).map(|i| i as u8).collect::<Vec<_>>());
        let mut asm = Assembler::new(10_000);
        let mut num = 0;
        loop {
            let (chunk, block) = slice(&body, num, 6).unwrap();
            match asm.feed(block, &chunk).unwrap() {
                Progress::Continue => num += 1,
                Progress::Complete(b) => {
                    assert_eq!(b, body);
                    break;
                }
            }
        }
        assert_eq!(num, 2);
        assert!(slice(&body, 3, 6).is_none());
        assert!(slice(&Bytes::new(), 0, 6).is_some());
    }

    #[test]
    fn gaps_and_oversize_are_refused() {
        let mut asm = Assembler::new(100);
        let b = |num, more| Block { num, more, szx: 2 };
        assert_eq!(asm.feed(b(0, true), &[0; 64]), Ok(Progress::Continue));
        assert!(matches!(
            asm.feed(b(2, true), &[0; 64]),
            Err(BlockError::Incomplete { .. })
        ));
        assert_eq!(
            asm.feed(b(1, false), &[0; 64]),
            Err(BlockError::TooLarge { max: 100 })
        );
    }
}
