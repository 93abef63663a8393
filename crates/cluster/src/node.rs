//! One cluster node: the Raft instance of the metadata group, the cluster listener, forming
//! or joining the cluster, and proposing commands.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tributary_store::Store;

use crate::TypeConfig;
use crate::defs::{Command, Definitions, Outcome};
use crate::network::{BoxStream, Network, Tls, Transport};
use crate::storage::{Applied, Applier, LogStore, NodeId, StateMachine};
use crate::wire::{self, Request, Response, WireError};

/// What a node needs to start.
pub struct NodeConfig {
    /// This node's id (`[cluster] node_id`).
    pub node_id: NodeId,
    /// The address peers reach this node's cluster listener at.
    pub advertise: String,
    /// Seed peers (id, address); may be empty for the first node of a new cluster.
    pub seeds: Vec<(NodeId, String)>,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// TLS for the links, if configured.
    pub tls: Option<Arc<dyn Tls>>,
    /// How long a definition change may wait for the cluster before it is refused.
    pub command_timeout: Duration,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Raft election timeout (the lower bound; the upper is twice it).
    pub election_timeout: Duration,
}

/// Why a node could not start or a command was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Raft engine refused the configuration or failed.
    #[error("cluster: {0}")]
    Raft(String),
    /// No quorum answered in time (a minority partition, or too many nodes down).
    #[error("the metadata store operation timed out")]
    Timeout,
    /// The storage failed.
    #[error("cluster storage: {0}")]
    Storage(String),
}

/// A member as shown by `cluster_status`.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Node id.
    pub id: NodeId,
    /// Cluster listener address.
    pub addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
}

/// The node's view of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This node.
    pub node_id: NodeId,
    /// Its address.
    pub advertise: String,
    /// Leader, learner, follower, candidate, or shutdown.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Members of the metadata group.
    pub members: Vec<Member>,
    /// True while a membership change is between its two steps (joint consensus).
    pub joint: bool,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Last applied log index.
    pub last_applied: Option<u64>,
}

/// A running cluster node.
pub struct Cluster {
    raft: Raft<TypeConfig>,
    id: NodeId,
    advertise: String,
    transport: Arc<Transport>,
    state: Arc<Mutex<Applied>>,
    timeout: Duration,
}

impl Cluster {
    /// Starts Raft over `store`, serves the cluster listener, and forms or joins the cluster
    /// in the background.
    pub async fn start(
        config: NodeConfig,
        listener: TcpListener,
        store: Arc<Store>,
        applier: Arc<dyn Applier>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let raft_config = openraft::Config {
            cluster_name: "tributary".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.as_millis() as u64,
            election_timeout_max: 2 * config.election_timeout.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let transport = Arc::new(Transport {
            me: config.node_id,
            secret: config.secret.clone(),
            tls: config.tls.clone(),
            connect_timeout: Duration::from_secs(2),
        });
        let log = LogStore::new(store.clone());
        let initialised = log
            .is_initialised()
            .map_err(|e| ClusterError::Storage(e.to_string()))?;
        let sm =
            StateMachine::open(store, applier).map_err(|e| ClusterError::Storage(e.to_string()))?;
        let state = sm.shared();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(transport.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let cluster = Arc::new(Cluster {
            raft,
            id: config.node_id,
            advertise: config.advertise.clone(),
            transport,
            state,
            timeout: config.command_timeout,
        });
        tokio::spawn(serve(listener, cluster.clone()));
        if !initialised {
            tokio::spawn(form(cluster.clone(), config.seeds));
        }
        Ok(cluster)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Stops Raft (at broker shutdown).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "cluster: raft shutdown");
        }
    }

    /// The node's view of the cluster.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        Status {
            node_id: self.id,
            advertise: self.advertise.clone(),
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Learner => "learner",
                ServerState::Candidate => "candidate",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            term: m.current_term,
            leader: m.current_leader,
            members,
            joint: membership.get_joint_config().len() > 1,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
        }
    }

    /// A copy of the replicated definitions as applied on this node.
    pub fn definitions(&self) -> Definitions {
        self.state.lock().defs.clone()
    }

    /// Proposes `command`, waits until it is committed by a quorum and applied on this node
    /// (so the local broker already shows it), and returns its outcome. Refused with
    /// [`ClusterError::Timeout`] when no quorum answers within the command timeout.
    pub async fn propose(&self, command: Command) -> Result<Outcome, ClusterError> {
        let deadline = Instant::now() + self.timeout;
        let (index, outcome) = tokio::time::timeout(self.timeout, self.commit(command))
            .await
            .map_err(|_| ClusterError::Timeout)??;
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "definition change applied")
            .await
            .map_err(|_| ClusterError::Timeout)?;
        Ok(outcome)
    }

    /// [`Cluster::propose`] from synchronous code running on a multi-threaded tokio runtime
    /// (the AMQP session, the user database): the worker thread blocks while other tasks
    /// move to other threads.
    pub fn propose_blocking(&self, command: Command) -> Result<Outcome, ClusterError> {
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| handle.block_on(self.propose(command)))
    }

    async fn commit(&self, command: Command) -> Result<(u64, Outcome), ClusterError> {
        let mut metrics = self.raft.metrics();
        loop {
            match self.raft.client_write(command.clone()).await {
                Ok(r) => return Ok((r.log_id.index, r.data)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let Some(node) = f.leader_node {
                        match self
                            .transport
                            .call_once(&node.addr, &Request::Write(command.clone()))
                            .await
                        {
                            Ok(Response::Write(Ok(r))) => return Ok(r),
                            Ok(Response::Write(Err(e))) => {
                                tracing::debug!(error = %e, "cluster: forwarded write refused")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(error = %e, "cluster: forward to leader"),
                        }
                    }
                    // Wait for a change of leader, or retry after a short pause.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
                }
                Err(e) => return Err(ClusterError::Raft(e.to_string())),
            }
        }
    }

    /// Adds `node` at `addr` as a voter (on the leader; forwarded otherwise).
    async fn join(&self, node: NodeId, addr: String) -> Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            let Some(leader) = m.current_leader else {
                return Err("no leader yet".into());
            };
            if !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.id)
            {
                return Err("not a member".into());
            }
            let Some(addr_of_leader) = m
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
            else {
                return Err("leader address unknown".into());
            };
            return match self
                .transport
                .call_once(&addr_of_leader, &Request::Join { node, addr })
                .await
            {
                Ok(Response::Join(r)) => r,
                Ok(_) => Err("unexpected answer".into()),
                Err(e) => Err(e.to_string()),
            };
        }
        let membership = m.membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == node)
            && membership.get_node(&node).map(|n| n.addr.as_str()) == Some(addr.as_str())
        {
            return Ok(());
        }
        self.raft
            .add_learner(node, BasicNode { addr: addr.clone() }, true)
            .await
            .map_err(|e| e.to_string())?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(node, addr, "cluster: node joined");
        Ok(())
    }

    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::AppendEntries(r) => Response::AppendEntries(self.raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(self.raft.vote(r).await),
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(self.raft.install_snapshot(r).await)
            }
            Request::Write(c) => Response::Write(match self.raft.client_write(c).await {
                Ok(r) => Ok((r.log_id.index, r.data)),
                Err(e) => Err(e.to_string()),
            }),
            Request::Join { node, addr } => Response::Join(self.join(node, addr).await),
            Request::Ping => {
                let m = self.raft.metrics().borrow().clone();
                Response::Pong {
                    initialised: m.membership_config.membership().nodes().next().is_some(),
                }
            }
        }
    }

    fn is_member(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == self.id)
    }
}

/// Accepts cluster links and answers their requests.
async fn serve(listener: TcpListener, cluster: Arc<Cluster>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let stream: BoxStream = match &cluster.transport.tls {
                Some(tls) => match tls.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cluster link refused: TLS handshake failed");
                        return;
                    }
                },
                None => Box::new(tcp),
            };
            if let Err(e) = link(stream, &cluster, peer).await {
                tracing::debug!(%peer, error = %e, "cluster link closed");
            }
        });
    }
}

async fn link(
    mut s: BoxStream,
    cluster: &Cluster,
    peer: std::net::SocketAddr,
) -> Result<(), WireError> {
    let handshake = tokio::time::timeout(
        cluster.transport.connect_timeout,
        wire::accept_handshake(&mut s, cluster.id, &cluster.transport.secret),
    )
    .await
    .map_err(|_| WireError::Io(std::io::ErrorKind::TimedOut.into()))?;
    let node = match handshake {
        Ok(node) => node,
        Err(WireError::BadSecret) => {
            tracing::warn!(%peer, "cluster link refused: the peer presented a wrong cluster secret");
            return Err(WireError::BadSecret);
        }
        Err(e) => return Err(e),
    };
    tracing::debug!(%peer, node, "cluster link authenticated");
    loop {
        let req: Request = match wire::read_frame(&mut s).await {
            Ok(r) => r,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let resp = cluster.handle(req).await;
        wire::write_frame(&mut s, &resp).await?;
    }
}

/// Forms a new cluster or joins an existing one, for a node that has never been a member.
///
/// Without seeds the node starts a cluster of its own. With seeds it asks each to let it
/// join; the node with the lowest id among the seeds and itself initialises the cluster
/// with all of them once a majority answers and none is a member of a cluster yet.
async fn form(cluster: Arc<Cluster>, seeds: Vec<(NodeId, String)>) {
    let me = cluster.id;
    if seeds.iter().all(|(id, _)| *id == me) {
        let members = BTreeMap::from([(
            me,
            BasicNode {
                addr: cluster.advertise.clone(),
            },
        )]);
        match cluster.raft.initialize(members).await {
            Ok(()) => tracing::info!(node = me, "cluster: formed a new cluster"),
            Err(e) => tracing::warn!(error = %e, "cluster: cannot initialise"),
        }
        return;
    }
    let mut metrics: watch::Receiver<_> = cluster.raft.metrics();
    let lowest = seeds.iter().map(|(id, _)| *id).chain([me]).min() == Some(me);
    loop {
        if cluster.is_member() {
            return;
        }
        for (id, addr) in seeds.iter().filter(|(id, _)| *id != me) {
            let join = Request::Join {
                node: me,
                addr: cluster.advertise.clone(),
            };
            match cluster.transport.call_once(addr, &join).await {
                Ok(Response::Join(Ok(()))) => {
                    tracing::info!(node = me, via = id, "cluster: joined");
                    return;
                }
                Ok(Response::Join(Err(e))) => {
                    tracing::debug!(seed = id, error = %e, "cluster: join not possible yet")
                }
                Ok(_) => {}
                Err(WireError::BadSecret) => {
                    tracing::error!(seed = id, %addr, "cluster: refused by seed: wrong cluster secret")
                }
                Err(e) => tracing::debug!(seed = id, error = %e, "cluster: seed unreachable"),
            }
        }
        if lowest && try_initialise(&cluster, &seeds).await {
            return;
        }
        // Wait for someone to make us a member, or try again in a second.
        let _ = tokio::time::timeout(Duration::from_secs(1), metrics.changed()).await;
    }
}

async fn try_initialise(cluster: &Cluster, seeds: &[(NodeId, String)]) -> bool {
    let me = cluster.id;
    let mut members = BTreeMap::from([(
        me,
        BasicNode {
            addr: cluster.advertise.clone(),
        },
    )]);
    let mut answered = 1;
    for (id, addr) in seeds.iter().filter(|(id, _)| *id != me) {
        members.insert(*id, BasicNode { addr: addr.clone() });
        match cluster.transport.call_once(addr, &Request::Ping).await {
            Ok(Response::Pong { initialised: false }) => answered += 1,
            Ok(Response::Pong { initialised: true }) => return false,
            _ => {}
        }
    }
    if answered * 2 <= members.len() {
        return false;
    }
    match cluster.raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(node = me, "cluster: formed a new cluster with the seeds");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cluster: cannot initialise");
            false
        }
    }
}
