//! Reading from a socket without a buffer per connection while it is idle.
//!
//! A connection that waits for input holds no read buffer: each worker
//! thread has one scratch buffer, a read lands there and only the bytes read
//! are copied into the connection's own buffer (which the decoders then split
//! into zero-copy frames). An idle connection therefore costs no buffer at
//! all, and a busy one reads up to [`SCRATCH_SIZE`] bytes per system call.
//! The futures here are cancel-safe: bytes are taken from the socket and
//! handed over within one poll.

use bytes::BytesMut;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes one read may take from the socket (the per-thread scratch buffer).
pub const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Reads once from `io` and appends what came to `buf`; `Ok(0)` is the end
/// of the stream.
pub async fn read_into<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    poll_fn(|cx| {
        poll_read_with(Pin::new(&mut *io), cx, SCRATCH_SIZE, |data| {
            buf.extend_from_slice(data)
        })
    })
    .await
}

/// Reads once, at most `max` bytes, from `io` and returns them as a vector
/// (empty: the end of the stream).
pub async fn read_vec<R: AsyncRead + Unpin>(io: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    poll_fn(|cx| poll_read_with(Pin::new(&mut *io), cx, max, |data| out = data.to_vec())).await?;
    Ok(out)
}

/// Polls one read into the thread's scratch buffer and passes the bytes
/// read to `take`; returns how many there were.
fn poll_read_with<R: AsyncRead>(
    io: Pin<&mut R>,
    cx: &mut Context<'_>,
    max: usize,
    take: impl FnOnce(&[u8]),
) -> Poll<io::Result<usize>> {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            let limit = max.clamp(1, scratch.len());
            let mut rb = ReadBuf::new(&mut scratch[..limit]);
            ready!(io.poll_read(cx, &mut rb))?;
            take(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        }
        // A read nested inside another one's poll on this thread (a stream
        // built on a stream): a buffer of its own for this once.
        Err(_) => {
            let mut own = vec![0; 4096];
            let mut rb = ReadBuf::new(&mut own);
            ready!(io.poll_read(cx, &mut rb))?;
            take(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn appends_what_was_read_and_reports_the_end() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"hello").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(read_into(&mut b, &mut buf).await.unwrap(), 5);
        a.write_all(b" world").await.unwrap();
        assert_eq!(read_into(&mut b, &mut buf).await.unwrap(), 6);
        assert_eq!(&buf[..], b"hello world");
        a.write_all(b"!").await.unwrap();
        assert_eq!(read_vec(&mut b, 1024).await.unwrap(), b"!");
        a.write_all(b"abc").await.unwrap();
        assert_eq!(read_vec(&mut b, 2).await.unwrap(), b"ab");
        assert_eq!(read_vec(&mut b, 2).await.unwrap(), b"c");
        drop(a);
        assert_eq!(read_into(&mut b, &mut buf).await.unwrap(), 0);
        assert!(read_vec(&mut b, 1024).await.unwrap().is_empty());
    }
}
