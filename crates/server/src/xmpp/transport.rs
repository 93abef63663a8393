//! The byte carriers under a client stream: TCP or TLS (a byte stream) and
//! WebSocket (one XML element per text message, RFC 7395).

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Bytes read from the socket at once: a sender's stanzas routed per
/// wake-up are bounded by it (a flooding sender then gives way sooner).
const READ_CHUNK: usize = 16 * 1024;

/// What a read produced.
pub enum Incoming {
    /// Part of a byte stream (TCP, TLS).
    Data(Vec<u8>),
    /// One complete WebSocket message.
    Message(Vec<u8>),
    /// The peer closed or the transport failed.
    Closed,
}

/// A carrier of a client stream. `read` must be cancel-safe: it is raced
/// against the session's mailbox.
pub trait Transport: Send {
    /// Waits for input.
    fn read(&mut self) -> impl Future<Output = Incoming> + Send;
    /// Writes chunks produced by the connection machine, in order.
    fn write(&mut self, chunks: Vec<Vec<u8>>) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the carrier after the stream ended.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// A byte-stream carrier (TCP or TLS). It holds no read buffer: reads go
/// through the thread's scratch buffer ([`crate::readbuf`]), so an idle
/// connection costs none.
pub struct StreamTransport<S> {
    io: S,
}

impl<S> StreamTransport<S> {
    /// Wraps a stream.
    pub fn new(io: S) -> Self {
        StreamTransport { io }
    }

    /// The stream back, for a STARTTLS upgrade.
    pub fn into_inner(self) -> S {
        self.io
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for StreamTransport<S> {
    async fn read(&mut self) -> Incoming {
        match crate::readbuf::read_vec(&mut self.io, READ_CHUNK).await {
            Ok(data) if !data.is_empty() => Incoming::Data(data),
            Ok(_) | Err(_) => Incoming::Closed,
        }
    }

    async fn write(&mut self, chunks: Vec<Vec<u8>>) -> io::Result<()> {
        let total: usize = chunks.iter().map(Vec::len).sum();
        let mut joined = Vec::with_capacity(total);
        for chunk in chunks {
            joined.extend_from_slice(&chunk);
        }
        self.io.write_all(&joined).await?;
        self.io.flush().await
    }

    async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// A WebSocket carrier (RFC 7395, subprotocol `xmpp`).
pub struct WsTransport {
    socket: WebSocket,
}

impl WsTransport {
    /// Wraps an upgraded WebSocket.
    pub fn new(socket: WebSocket) -> Self {
        WsTransport { socket }
    }
}

impl Transport for WsTransport {
    async fn read(&mut self) -> Incoming {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return Incoming::Message(text.as_bytes().to_vec());
                }
                Some(Ok(Message::Binary(bytes))) => return Incoming::Message(bytes.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Incoming::Closed,
            }
        }
    }

    async fn write(&mut self, chunks: Vec<Vec<u8>>) -> io::Result<()> {
        for chunk in chunks {
            let text = String::from_utf8(chunk)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.socket
                .feed(Message::Text(text.into()))
                .await
                .map_err(io::Error::other)?;
        }
        self.socket.flush().await.map_err(io::Error::other)
    }

    async fn shutdown(&mut self) {
        let _ = self.socket.send(Message::Close(None)).await;
    }
}
