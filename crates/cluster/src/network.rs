//! Outbound links: a connection per peer, opened on first use (TCP, optionally TLS, then the
//! secret handshake), one request at a time, dropped and reopened after any error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::TypeConfig;
use crate::storage::NodeId;
use crate::wire::{self, Request, Response, WireError};

/// A byte stream the link runs over (TCP or TLS over TCP).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;
/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// TLS for the cluster listener and the outbound links, provided by the server (which owns
/// the certificates).
pub trait Tls: Send + Sync + 'static {
    /// Wraps an accepted connection.
    fn accept(&self, tcp: TcpStream) -> BoxFuture<std::io::Result<BoxStream>>;
    /// Wraps an outbound connection to `addr`.
    fn connect(&self, tcp: TcpStream, addr: String) -> BoxFuture<std::io::Result<BoxStream>>;
}

/// How this node reaches its peers.
pub struct Transport {
    /// This node's id.
    pub me: NodeId,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// TLS, when configured.
    pub tls: Option<Arc<dyn Tls>>,
    /// Time allowed for connecting and the handshake.
    pub connect_timeout: Duration,
}

impl Transport {
    /// Opens an authenticated link to `addr`.
    pub async fn connect(&self, addr: &str) -> Result<BoxStream, WireError> {
        let fut = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut s: BoxStream = match &self.tls {
                Some(tls) => tls.connect(tcp, addr.to_string()).await?,
                None => Box::new(tcp),
            };
            wire::connect_handshake(&mut s, self.me, &self.secret).await?;
            Ok(s)
        };
        tokio::time::timeout(self.connect_timeout, fut)
            .await
            .map_err(|_| WireError::Io(std::io::ErrorKind::TimedOut.into()))?
    }

    /// One request on a new link (for joins, pings and forwarded writes).
    pub async fn call_once(&self, addr: &str, req: &Request) -> Result<Response, WireError> {
        let mut s = self.connect(addr).await?;
        wire::write_frame(&mut s, req).await?;
        wire::read_frame(&mut s).await
    }
}

/// Makes a [`Peer`] for each target openraft replicates to.
#[derive(Clone)]
pub struct Network {
    transport: Arc<Transport>,
}

impl Network {
    /// The factory over `transport`.
    pub fn new(transport: Arc<Transport>) -> Self {
        Network { transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            link: None,
        }
    }
}

/// The link to one peer.
pub struct Peer {
    target: NodeId,
    addr: String,
    transport: Arc<Transport>,
    link: Option<BoxStream>,
}

impl Peer {
    async fn call(&mut self, req: Request, ttl: Duration) -> Result<Response, WireError> {
        let fut = async {
            if self.link.is_none() {
                self.link = Some(self.transport.connect(&self.addr).await?);
            }
            let Some(link) = self.link.as_mut() else {
                return Err(WireError::Io(std::io::ErrorKind::NotConnected.into()));
            };
            wire::write_frame(link, &req).await?;
            wire::read_frame(link).await
        };
        let result = match tokio::time::timeout(ttl, fut).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Io(std::io::ErrorKind::TimedOut.into())),
        };
        if result.is_err() {
            // The stream may be mid-frame: never reuse it.
            self.link = None;
        }
        result
    }

    fn unreachable<E: std::error::Error>(
        &self,
        e: &WireError,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        match e {
            WireError::Io(_) => RPCError::Unreachable(Unreachable::new(e)),
            _ => RPCError::Network(NetworkError::new(e)),
        }
    }

    fn remote<T, E: std::error::Error>(
        &self,
        r: Result<T, RaftError<NodeId, E>>,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn unexpected<E: std::error::Error>(
        &self,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::Network(NetworkError::new(&AnyError::error(
            "unexpected response on the cluster link",
        )))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(r)) => self.remote(r),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::InstallSnapshot(r)) => self.remote(r),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(r)) => self.remote(r),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.unreachable(&e)),
        }
    }
}
