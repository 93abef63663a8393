//! The classic consumer-group protocol's coordinator (KIP-62 era): a group moves
//! Empty → PreparingRebalance → CompletingRebalance → Stable. A join is answered once every
//! known member has sent its JoinGroup (or the rebalance timeout dropped the ones that did
//! not); the leader gets every member's metadata and sends the assignment in its SyncGroup,
//! which answers every member's SyncGroup. Members not heard from within their session timeout
//! are removed, which starts a rebalance. Joins and syncs that must wait are held as
//! caller-chosen [`Waiter`] tokens and come back as [`Completion`]s. Time is passed in (ms).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::code;
use crate::response::JoinGroupResponse;

/// A caller's token for a JoinGroup or SyncGroup that waits.
pub type Waiter = u64;

/// An answer to a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// A JoinGroup's answer.
    Join(Waiter, JoinGroupResponse),
    /// A SyncGroup's answer: error and assignment.
    Sync(Waiter, i16, Bytes),
}

/// Where a group is in its rebalance cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to (re)join, until the deadline (ms).
    PreparingRebalance(u64),
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned.
    Stable,
}

#[derive(Debug)]
struct Member {
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Bytes)>,
    last_seen: u64,
    join: Option<Waiter>,
    sync: Option<Waiter>,
    assignment: Bytes,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
        }
    }
}

/// A JoinGroup as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct Join<'a> {
    /// The member id (empty for a new member).
    pub member_id: &'a str,
    /// The client id, the prefix of a new member's id.
    pub client_id: &'a str,
    /// Session timeout.
    pub session_timeout_ms: u64,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: u64,
    /// Protocol type ("consumer").
    pub protocol_type: &'a str,
    /// Supported assignors with metadata, preferred first.
    pub protocols: &'a [(String, Bytes)],
}

/// Every group of a broker.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: HashMap<String, Group>,
    next_member: u64,
}

/// Smallest and largest session timeouts accepted (Kafka's group.min/max.session.timeout.ms).
pub const SESSION_TIMEOUT_RANGE: (u64, u64) = (1_000, 1_800_000);

impl Coordinator {
    /// A coordinator with no groups.
    pub fn new() -> Coordinator {
        Coordinator::default()
    }

    /// The state and generation of a group, if it exists.
    pub fn state(&self, group: &str) -> Option<(GroupState, i32, usize)> {
        self.groups
            .get(group)
            .map(|g| (g.state, g.generation, g.members.len()))
    }

    /// Handles a JoinGroup; the completions may include `waiter`'s own answer.
    pub fn join(
        &mut self,
        now: u64,
        group_id: &str,
        join: Join<'_>,
        waiter: Waiter,
    ) -> Vec<Completion> {
        let fail = |error: i16, member: &str| {
            vec![Completion::Join(
                waiter,
                JoinGroupResponse {
                    error,
                    generation_id: -1,
                    member_id: member.to_owned(),
                    ..Default::default()
                },
            )]
        };
        if group_id.is_empty() {
            return fail(code::INVALID_GROUP_ID, join.member_id);
        }
        if !(SESSION_TIMEOUT_RANGE.0..=SESSION_TIMEOUT_RANGE.1).contains(&join.session_timeout_ms) {
            return fail(code::INVALID_SESSION_TIMEOUT, join.member_id);
        }
        if join.protocol_type.is_empty() || join.protocols.is_empty() {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL, join.member_id);
        }
        let g = self
            .groups
            .entry(group_id.to_owned())
            .or_insert_with(Group::new);
        if !g.members.is_empty()
            && (g.protocol_type != join.protocol_type
                || !g.members.values().all(|m| {
                    m.protocols
                        .iter()
                        .any(|(p, _)| join.protocols.iter().any(|(q, _)| q == p))
                }))
        {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL, join.member_id);
        }
        let member_id = if join.member_id.is_empty() {
            self.next_member += 1;
            format!("{}-{}-{}", join.client_id, self.next_member, now)
        } else if !g.members.contains_key(join.member_id) {
            return fail(code::UNKNOWN_MEMBER_ID, join.member_id);
        } else {
            join.member_id.to_owned()
        };
        g.protocol_type = join.protocol_type.to_owned();
        let m = g.members.entry(member_id).or_insert_with(|| Member {
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            protocols: Vec::new(),
            last_seen: now,
            join: None,
            sync: None,
            assignment: Bytes::new(),
        });
        m.session_timeout_ms = join.session_timeout_ms;
        m.rebalance_timeout_ms = join.rebalance_timeout_ms.max(join.session_timeout_ms);
        m.protocols = join.protocols.to_vec();
        m.last_seen = now;
        // A second join from the same member replaces the first (its connection gave up).
        let mut out = Vec::new();
        if let Some(old) = m.join.replace(waiter) {
            out.push(Completion::Join(
                old,
                JoinGroupResponse {
                    error: code::UNKNOWN_MEMBER_ID,
                    generation_id: -1,
                    ..Default::default()
                },
            ));
        }
        out.extend(prepare_rebalance(g, now));
        out.extend(maybe_complete_join(g, now, false));
        out
    }

    /// Handles a SyncGroup.
    pub fn sync(
        &mut self,
        now: u64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: &[(String, Bytes)],
        waiter: Waiter,
    ) -> Vec<Completion> {
        let fail = |e| vec![Completion::Sync(waiter, e, Bytes::new())];
        let Some(g) = self.groups.get_mut(group_id) else {
            return fail(code::UNKNOWN_MEMBER_ID);
        };
        let Some(m) = g.members.get_mut(member_id) else {
            return fail(code::UNKNOWN_MEMBER_ID);
        };
        m.last_seen = now;
        if generation != g.generation {
            return fail(code::ILLEGAL_GENERATION);
        }
        match g.state {
            GroupState::Empty | GroupState::PreparingRebalance(_) => {
                fail(code::REBALANCE_IN_PROGRESS)
            }
            GroupState::Stable => vec![Completion::Sync(waiter, code::NONE, m.assignment.clone())],
            GroupState::CompletingRebalance => {
                let mut out = Vec::new();
                if let Some(old) = m.sync.replace(waiter) {
                    out.push(Completion::Sync(
                        old,
                        code::REBALANCE_IN_PROGRESS,
                        Bytes::new(),
                    ));
                }
                if member_id == g.leader {
                    for (id, member) in g.members.iter_mut() {
                        member.assignment = assignments
                            .iter()
                            .find(|(a, _)| a == id)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default();
                    }
                    g.state = GroupState::Stable;
                    for member in g.members.values_mut() {
                        if let Some(w) = member.sync.take() {
                            out.push(Completion::Sync(w, code::NONE, member.assignment.clone()));
                        }
                    }
                }
                out
            }
        }
    }

    /// Handles a Heartbeat; returns its error code.
    pub fn heartbeat(&mut self, now: u64, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let Some(g) = self.groups.get_mut(group_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let Some(m) = g.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = now;
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        match g.state {
            GroupState::PreparingRebalance(_) | GroupState::Empty => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }

    /// Whether an OffsetCommit from this member at this generation may be applied: a commit
    /// with generation -1 and no member is a "simple" commit, accepted while the group has no
    /// members.
    pub fn check_commit(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let g = self.groups.get(group_id);
        if generation < 0 && member_id.is_empty() {
            return match g {
                Some(g) if !g.members.is_empty() => code::UNKNOWN_MEMBER_ID,
                _ => code::NONE,
            };
        }
        let Some(g) = g else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if !g.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        match g.state {
            GroupState::PreparingRebalance(_) => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }

    /// Handles a LeaveGroup for one member; returns its error and completions for the rest.
    pub fn leave(&mut self, now: u64, group_id: &str, member_id: &str) -> (i16, Vec<Completion>) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return (code::UNKNOWN_MEMBER_ID, Vec::new());
        };
        if !g.members.contains_key(member_id) {
            return (code::UNKNOWN_MEMBER_ID, Vec::new());
        }
        let out = remove_member(g, member_id, now);
        (code::NONE, out)
    }

    /// Expires members past their session timeout and rebalances past their deadline.
    pub fn tick(&mut self, now: u64) -> Vec<Completion> {
        let mut out = Vec::new();
        for g in self.groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.join.is_none() && now >= m.last_seen + m.session_timeout_ms)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                out.extend(remove_member(g, &id, now));
            }
            if let GroupState::PreparingRebalance(deadline) = g.state
                && now >= deadline
            {
                out.extend(maybe_complete_join(g, now, true));
            }
        }
        self.groups
            .retain(|_, g| !(g.members.is_empty() && g.state == GroupState::Empty));
        out
    }

    /// The earliest time [`Coordinator::tick`] has work, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.groups
            .values()
            .flat_map(|g| {
                let d = match g.state {
                    GroupState::PreparingRebalance(d) => Some(d),
                    _ => None,
                };
                g.members
                    .values()
                    .filter(|m| m.join.is_none())
                    .map(|m| m.last_seen + m.session_timeout_ms)
                    .chain(d)
            })
            .min()
    }
}

fn remove_member(g: &mut Group, member_id: &str, now: u64) -> Vec<Completion> {
    let mut out = Vec::new();
    if let Some(m) = g.members.remove(member_id) {
        if let Some(w) = m.join {
            out.push(Completion::Join(
                w,
                JoinGroupResponse {
                    error: code::UNKNOWN_MEMBER_ID,
                    generation_id: -1,
                    ..Default::default()
                },
            ));
        }
        if let Some(w) = m.sync {
            out.push(Completion::Sync(w, code::UNKNOWN_MEMBER_ID, Bytes::new()));
        }
    }
    if g.members.is_empty() {
        g.state = GroupState::Empty;
        g.generation += 1;
        g.leader.clear();
        return out;
    }
    out.extend(prepare_rebalance(g, now));
    out.extend(maybe_complete_join(g, now, false));
    out
}

/// Starts a rebalance unless one is under way; pending syncs learn of it.
fn prepare_rebalance(g: &mut Group, now: u64) -> Vec<Completion> {
    if matches!(g.state, GroupState::PreparingRebalance(_)) {
        return Vec::new();
    }
    let timeout = g
        .members
        .values()
        .map(|m| m.rebalance_timeout_ms)
        .max()
        .unwrap_or(0);
    g.state = GroupState::PreparingRebalance(now + timeout);
    g.members
        .values_mut()
        .filter_map(|m| m.sync.take())
        .map(|w| Completion::Sync(w, code::REBALANCE_IN_PROGRESS, Bytes::new()))
        .collect()
}

/// Completes the join phase once every member has joined, or (at the deadline) without the
/// members that did not.
fn maybe_complete_join(g: &mut Group, now: u64, deadline: bool) -> Vec<Completion> {
    if !matches!(g.state, GroupState::PreparingRebalance(_)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if g.members.values().any(|m| m.join.is_none()) {
        if !deadline {
            return out;
        }
        let late: Vec<String> = g
            .members
            .iter()
            .filter(|(_, m)| m.join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some(m) = g.members.remove(&id)
                && let Some(w) = m.sync
            {
                out.push(Completion::Sync(w, code::UNKNOWN_MEMBER_ID, Bytes::new()));
            }
        }
    }
    g.generation += 1;
    if g.members.is_empty() {
        g.state = GroupState::Empty;
        g.leader.clear();
        return out;
    }
    // The first protocol of the first member that every member supports.
    let candidates: Vec<String> = g
        .members
        .values()
        .next()
        .map(|m| m.protocols.iter().map(|(p, _)| p.clone()).collect())
        .unwrap_or_default();
    g.protocol = candidates
        .into_iter()
        .find(|p| {
            g.members
                .values()
                .all(|m| m.protocols.iter().any(|(q, _)| q == p))
        })
        .unwrap_or_default();
    if !g.members.contains_key(&g.leader) {
        g.leader = g.members.keys().next().cloned().unwrap_or_default();
    }
    g.state = GroupState::CompletingRebalance;
    let everyone: Vec<(String, Bytes)> = g
        .members
        .iter()
        .map(|(id, m)| {
            let meta = m
                .protocols
                .iter()
                .find(|(p, _)| *p == g.protocol)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            (id.clone(), meta)
        })
        .collect();
    for (id, m) in g.members.iter_mut() {
        m.last_seen = now;
        if let Some(w) = m.join.take() {
            out.push(Completion::Join(
                w,
                JoinGroupResponse {
                    error: code::NONE,
                    generation_id: g.generation,
                    protocol_name: g.protocol.clone(),
                    leader: g.leader.clone(),
                    member_id: id.clone(),
                    members: if *id == g.leader {
                        everyone.clone()
                    } else {
                        Vec::new()
                    },
                },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocols() -> Vec<(String, Bytes)> {
        vec![("range".into(), Bytes::from_static(b"meta"))]
    }

    fn join(c: &mut Coordinator, now: u64, member: &str, waiter: Waiter) -> Vec<Completion> {
        let p = protocols();
        c.join(
            now,
            "g",
            Join {
                member_id: member,
                client_id: "c",
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                protocol_type: "consumer",
                protocols: &p,
            },
            waiter,
        )
    }

    fn joined(out: &[Completion], waiter: Waiter) -> JoinGroupResponse {
        out.iter()
            .find_map(|c| match c {
                Completion::Join(w, r) if *w == waiter => Some(r.clone()),
                _ => None,
            })
            .expect("join answered")
    }

    #[test]
    fn two_members_rebalance_and_a_leave_triggers_another() {
        let mut c = Coordinator::new();
        let a = joined(&join(&mut c, 0, "", 1), 1);
        assert_eq!(
            (a.error, a.generation_id, a.leader == a.member_id),
            (0, 1, true)
        );
        let out = c.sync(
            0,
            "g",
            1,
            &a.member_id,
            &[(a.member_id.clone(), Bytes::from_static(b"all"))],
            2,
        );
        assert_eq!(
            out,
            vec![Completion::Sync(2, 0, Bytes::from_static(b"all"))]
        );
        // B joins: A must rejoin; its heartbeat says so.
        assert!(join(&mut c, 1, "", 3).is_empty());
        assert_eq!(
            c.heartbeat(2, "g", 1, &a.member_id),
            code::REBALANCE_IN_PROGRESS
        );
        let out = join(&mut c, 3, &a.member_id, 4);
        let (ra, rb) = (joined(&out, 4), joined(&out, 3));
        assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
        assert_eq!(ra.members.len(), 2);
        assert!(rb.members.is_empty());
        // Old generation refused.
        assert_eq!(
            c.heartbeat(4, "g", 1, &a.member_id),
            code::ILLEGAL_GENERATION
        );
        assert!(c.sync(4, "g", 2, &rb.member_id, &[], 5).is_empty());
        let out = c.sync(
            4,
            "g",
            2,
            &ra.member_id,
            &[(rb.member_id.clone(), Bytes::from_static(b"b"))],
            6,
        );
        assert!(out.contains(&Completion::Sync(5, 0, Bytes::from_static(b"b"))));
        assert!(out.contains(&Completion::Sync(6, 0, Bytes::new())));
        // B leaves: A is told to rejoin and gets generation 3 alone.
        let (e, out) = c.leave(5, "g", &rb.member_id);
        assert_eq!((e, out.len()), (0, 0));
        assert_eq!(
            c.heartbeat(6, "g", 2, &ra.member_id),
            code::REBALANCE_IN_PROGRESS
        );
        let r = joined(&join(&mut c, 7, &ra.member_id, 7), 7);
        assert_eq!((r.generation_id, r.members.len()), (3, 1));
        assert_eq!(c.heartbeat(8, "g", 3, "nobody"), code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_silent_member_times_out_and_a_late_one_is_dropped_at_the_deadline() {
        let mut c = Coordinator::new();
        let a = joined(&join(&mut c, 0, "", 1), 1);
        c.sync(0, "g", 1, &a.member_id, &[], 2);
        let out = join(&mut c, 0, "", 3);
        assert!(out.is_empty());
        // A never rejoins: dropped at its session timeout (10 s), B completes alone.
        let out = c.tick(10_000);
        let b = joined(&out, 3);
        assert_eq!((b.generation_id, b.members.len()), (2, 1));
        assert_eq!(c.state("g").map(|s| s.2), Some(1));
    }
}
