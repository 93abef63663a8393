//! The cluster link: length-prefixed postcard frames, the shared-secret handshake, and the
//! request/response messages.
//!
//! A frame is a big-endian `u32` length and that many bytes of postcard; a length above
//! [`MAX_FRAME`] ends the connection before anything is allocated. The handshake proves that
//! both ends know the cluster secret without sending it: the accepting node sends a random
//! nonce, the connecting node answers with its own nonce and
//! `HMAC-SHA256(secret, "tributary-cluster-1 client" ‖ server nonce ‖ client nonce ‖ node id)`,
//! and the accepting node proves itself the same way with the nonces swapped. Proofs are
//! compared in constant time.

use hmac::{Hmac, Mac};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TypeConfig;
use crate::defs::{Command, Outcome};
use crate::storage::NodeId;

/// Largest frame accepted (a snapshot chunk or a batch of log entries stays far below).
pub const MAX_FRAME: usize = 64 << 20;
/// Version of the link protocol, sent in the first frame.
pub const PROTOCOL: u32 = 1;

/// A link failure.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Socket error or end of stream.
    #[error("cluster link: {0}")]
    Io(#[from] std::io::Error),
    /// A frame larger than [`MAX_FRAME`].
    #[error("cluster link: frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Bytes that are not the expected message.
    #[error("cluster link: bad message: {0}")]
    Decode(#[from] postcard::Error),
    /// The peer's proof did not match: it does not know the cluster secret.
    #[error("cluster link: the peer does not know the cluster secret")]
    BadSecret,
    /// The peer speaks another version of the link protocol.
    #[error("cluster link: protocol version {0}, expected {PROTOCOL}")]
    Version(u32),
}

/// Writes one frame.
pub async fn write_frame<S: AsyncWrite + Unpin, T: Serialize>(
    s: &mut S,
    msg: &T,
) -> Result<(), WireError> {
    let bytes = postcard::to_stdvec(msg)?;
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let len = u32::try_from(bytes.len()).map_err(|_| WireError::TooLarge(bytes.len()))?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(&bytes).await?;
    s.flush().await?;
    Ok(())
}

/// Reads one frame, refusing a length over [`MAX_FRAME`] before allocating.
pub async fn read_frame<S: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    s: &mut S,
) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(postcard::from_bytes(&buf)?)
}

/// First frame, from the accepting node.
#[derive(Debug, Serialize, Deserialize)]
struct Challenge {
    protocol: u32,
    node: NodeId,
    nonce: [u8; 32],
}

/// The connecting node's answer.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    node: NodeId,
    nonce: [u8; 32],
    proof: [u8; 32],
}

/// The accepting node's verdict and its own proof.
#[derive(Debug, Serialize, Deserialize)]
enum Verdict {
    Accepted { proof: [u8; 32] },
    Refused,
}

fn proof(secret: &[u8], role: &str, first: &[u8; 32], second: &[u8; 32], node: NodeId) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(b"tributary-cluster-1 ");
    mac.update(role.as_bytes());
    mac.update(first);
    mac.update(second);
    mac.update(&node.to_be_bytes());
    mac.finalize().into_bytes().into()
}

fn nonce() -> Result<[u8; 32], WireError> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| WireError::Io(std::io::Error::other(e.to_string())))?;
    Ok(n)
}

/// Runs the accepting side of the handshake; returns the peer's node id.
pub async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: NodeId,
    secret: &[u8],
) -> Result<NodeId, WireError> {
    let ours = nonce()?;
    write_frame(
        s,
        &Challenge {
            protocol: PROTOCOL,
            node: me,
            nonce: ours,
        },
    )
    .await?;
    let answer: Answer = read_frame(s).await?;
    let expected = proof(secret, "client", &ours, &answer.nonce, answer.node);
    if !bool::from(expected.ct_eq(&answer.proof)) {
        let _ = write_frame(s, &Verdict::Refused).await;
        return Err(WireError::BadSecret);
    }
    let mine = proof(secret, "server", &answer.nonce, &ours, me);
    write_frame(s, &Verdict::Accepted { proof: mine }).await?;
    Ok(answer.node)
}

/// Runs the connecting side of the handshake; returns the peer's node id.
pub async fn connect_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: NodeId,
    secret: &[u8],
) -> Result<NodeId, WireError> {
    let challenge: Challenge = read_frame(s).await?;
    if challenge.protocol != PROTOCOL {
        return Err(WireError::Version(challenge.protocol));
    }
    let ours = nonce()?;
    let p = proof(secret, "client", &challenge.nonce, &ours, me);
    write_frame(
        s,
        &Answer {
            node: me,
            nonce: ours,
            proof: p,
        },
    )
    .await?;
    match read_frame(s).await? {
        Verdict::Accepted { proof: theirs } => {
            let expected = proof(secret, "server", &ours, &challenge.nonce, challenge.node);
            if bool::from(expected.ct_eq(&theirs)) {
                Ok(challenge.node)
            } else {
                Err(WireError::BadSecret)
            }
        }
        Verdict::Refused => Err(WireError::BadSecret),
    }
}

/// A request over an authenticated link.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft AppendEntries.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote.
    Vote(VoteRequest<NodeId>),
    /// Raft InstallSnapshot (one chunk).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command proposed on a follower, forwarded to the leader.
    Write(Command),
    /// A node asks to become a voting member.
    Join {
        /// Its id.
        node: NodeId,
        /// Its cluster listener address.
        addr: String,
    },
    /// Is this node part of a cluster yet?
    Ping,
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Raft AppendEntries.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Raft RequestVote.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Raft InstallSnapshot.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The log index the command was committed at and its outcome, or why not.
    Write(Result<(u64, Outcome), String>),
    /// Joined, or why not.
    Join(Result<(), String>),
    /// Whether the node has joined or formed a cluster.
    Pong {
        /// True once it has a vote or a log.
        initialised: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handshake_accepts_the_same_secret() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { accept_handshake(&mut a, 1, b"s3cret").await });
        let peer = connect_handshake(&mut b, 2, b"s3cret").await.unwrap();
        assert_eq!(peer, 1);
        assert_eq!(server.await.unwrap().unwrap(), 2);
    }

    #[tokio::test]
    async fn handshake_refuses_a_wrong_secret() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { accept_handshake(&mut a, 1, b"right").await });
        let client = connect_handshake(&mut b, 2, b"wrong").await;
        assert!(matches!(client, Err(WireError::BadSecret)));
        assert!(matches!(server.await.unwrap(), Err(WireError::BadSecret)));
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocating() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let r: Result<Request, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(WireError::TooLarge(_))));
    }

    #[tokio::test]
    async fn requests_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        write_frame(
            &mut a,
            &Request::Join {
                node: 3,
                addr: "127.0.0.1:1".into(),
            },
        )
        .await
        .unwrap();
        match read_frame(&mut b).await.unwrap() {
            Request::Join { node, addr } => assert_eq!((node, addr.as_str()), (3, "127.0.0.1:1")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
