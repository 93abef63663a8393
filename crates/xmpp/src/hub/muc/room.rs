//! One room's state: configuration, affiliations, occupants with their
//! roles, subject and the in-memory discussion history (XEP-0045 §5).

use std::collections::{BTreeMap, VecDeque};

use jid::{BareJid, FullJid, Jid};
use tributary_xmpp_xml::Element;

use crate::hub::SessionId;

/// A long-lived relation between a user and a room (XEP-0045 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::hub) enum Affiliation {
    /// Banned.
    Outcast,
    /// No affiliation.
    None,
    /// A member: may enter a members-only room.
    Member,
    /// An administrator: bans, member lists, moderator role.
    Admin,
    /// An owner: configuration, admin and owner lists, destruction.
    Owner,
}

impl Affiliation {
    /// The attribute value.
    pub(in crate::hub) fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    /// Parses the attribute value.
    pub(in crate::hub) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// A temporary, per-visit position in a room (XEP-0045 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::hub) enum Role {
    /// Not in the room.
    None,
    /// May be present but not speak in a moderated room.
    Visitor,
    /// May speak.
    Participant,
    /// May kick and grant or revoke voice.
    Moderator,
}

impl Role {
    /// The attribute value.
    pub(in crate::hub) fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    /// Parses the attribute value.
    pub(in crate::hub) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// The room configuration (the `muc#roomconfig` form, XEP-0045 §10.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::hub) struct Config {
    /// Natural-language room name.
    pub(in crate::hub) name: String,
    /// Short description.
    pub(in crate::hub) desc: String,
    /// Kept when the last occupant leaves, and across restarts.
    pub(in crate::hub) persistent: bool,
    /// Listed in the service's disco#items.
    pub(in crate::hub) public: bool,
    /// Only members (and admins, owners) may enter.
    pub(in crate::hub) members_only: bool,
    /// The password, when the room is password-protected.
    pub(in crate::hub) password: Option<String>,
    /// Visitors may not speak.
    pub(in crate::hub) moderated: bool,
    /// Real JIDs shown to everyone (non-anonymous) rather than to moderators.
    pub(in crate::hub) whois_anyone: bool,
    /// Most occupants at once; 0 is no limit.
    pub(in crate::hub) max_users: usize,
    /// Participants (not only moderators) may change the subject.
    pub(in crate::hub) change_subject: bool,
    /// Messages kept for the history sent on join.
    pub(in crate::hub) history_length: usize,
    /// Members (not only admins and owners) may invite others into a
    /// members-only room, which makes the invitee a member (§9.3).
    pub(in crate::hub) allow_invites: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: String::new(),
            desc: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            password: None,
            moderated: false,
            whois_anyone: false,
            max_users: 0,
            change_subject: false,
            history_length: DEFAULT_HISTORY,
            allow_invites: false,
        }
    }
}

/// History kept by default.
pub(in crate::hub) const DEFAULT_HISTORY: usize = 20;
/// The most history a room may keep.
pub(in crate::hub) const MAX_HISTORY: usize = 200;

/// One occupant (one session under one nickname).
#[derive(Clone, Debug)]
pub(in crate::hub) struct Occupant {
    /// The nickname (the resource of the occupant JID).
    pub(in crate::hub) nick: String,
    /// The real full JID.
    pub(in crate::hub) jid: FullJid,
    /// The session.
    pub(in crate::hub) session: SessionId,
    /// The role.
    pub(in crate::hub) role: Role,
    /// The last presence it sent to the room, reduced to show, status,
    /// priority and extensions other than MUC's (no addresses).
    pub(in crate::hub) presence: Element,
}

/// A message of the discussion history.
#[derive(Clone, Debug)]
pub(in crate::hub) struct Past {
    /// The message as broadcast (`from` the occupant JID, no `to`).
    pub(in crate::hub) stanza: Element,
    /// When it was sent (Unix ms).
    pub(in crate::hub) at: u64,
}

/// The current subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::hub) struct Subject {
    /// Who set it (a nickname), empty when unknown.
    pub(in crate::hub) nick: String,
    /// The text.
    pub(in crate::hub) text: String,
}

/// A room.
#[derive(Clone, Debug)]
pub(in crate::hub) struct Room {
    /// `room@service`.
    pub(in crate::hub) jid: BareJid,
    /// The configuration.
    pub(in crate::hub) config: Config,
    /// Affiliations other than `none`.
    pub(in crate::hub) affiliations: BTreeMap<BareJid, Affiliation>,
    /// Occupants in join order.
    pub(in crate::hub) occupants: Vec<Occupant>,
    /// The subject, if one was set.
    pub(in crate::hub) subject: Option<Subject>,
    /// Recent messages, oldest first.
    pub(in crate::hub) history: VecDeque<Past>,
    /// Newly created and not yet configured: nobody else may enter.
    pub(in crate::hub) locked: bool,
    /// Mediated invitations not yet declined: invitee → inviters (real
    /// bare JIDs), so that a decline goes only to someone who invited.
    pub(in crate::hub) invited: BTreeMap<BareJid, Vec<Jid>>,
}

impl Room {
    /// A new room with the default configuration.
    pub(in crate::hub) fn new(jid: BareJid) -> Self {
        Room {
            jid,
            config: Config::default(),
            affiliations: BTreeMap::new(),
            occupants: Vec::new(),
            subject: None,
            history: VecDeque::new(),
            locked: false,
            invited: BTreeMap::new(),
        }
    }

    /// The affiliation of a user.
    pub(in crate::hub) fn affiliation(&self, user: &BareJid) -> Affiliation {
        self.affiliations
            .get(user)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// Sets (or clears, with `none`) an affiliation.
    pub(in crate::hub) fn set_affiliation(&mut self, user: BareJid, aff: Affiliation) {
        if aff == Affiliation::None {
            self.affiliations.remove(&user);
        } else {
            self.affiliations.insert(user, aff);
        }
    }

    /// The role a user with `aff` gets on entering (XEP-0045 §5.1.2).
    pub(in crate::hub) fn default_role(&self, aff: Affiliation) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// The index of the occupant of `session`.
    pub(in crate::hub) fn by_session(&self, session: SessionId) -> Option<usize> {
        self.occupants.iter().position(|o| o.session == session)
    }

    /// The index of the occupant named `nick`.
    pub(in crate::hub) fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    /// The occupant JID `room@service/nick`.
    pub(in crate::hub) fn occupant_jid(&self, nick: &str) -> String {
        format!("{}/{nick}", self.jid)
    }

    /// Whether a message may be stored, then trims the history.
    pub(in crate::hub) fn remember(&mut self, stanza: Element, at: u64) {
        if self.config.history_length == 0 {
            self.history.clear();
            return;
        }
        self.history.push_back(Past { stanza, at });
        self.trim_history();
    }

    /// Drops the oldest messages beyond the configured length.
    pub(in crate::hub) fn trim_history(&mut self) {
        while self.history.len() > self.config.history_length {
            self.history.pop_front();
        }
    }

    /// Whether the room has a password.
    pub(in crate::hub) fn password_protected(&self) -> bool {
        self.config.password.is_some()
    }
}
