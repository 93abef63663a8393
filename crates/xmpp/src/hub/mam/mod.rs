//! Message Archive Management (XEP-0313, `urn:xmpp:mam:2`) for accounts'
//! one-to-one messages and for MUC rooms, with stable stanza ids
//! (XEP-0359) and Result Set Management paging (XEP-0059).
//!
//! Every `chat` or `normal` message with a `<body/>` between two local
//! accounts is archived on both sides (as the sender's preferences and the
//! recipient's allow), and every groupchat message with a body in a room's
//! archive. An archive keeps at most [`super::HubConfig::mam_max_messages`]
//! messages, the oldest dropped first; 0 turns archiving off.
//!
//! | table | key | value |
//! |---|---|---|
//! | `xmpp_mam` | `<archive JID>/<id, 20 digits>` | `{"at":ms,"with":jid,"stanza":tokens}` |
//! | `xmpp_mam_prefs` | bare JID | `{"default":"always/never/roster","always":[..],"never":[..]}` |
//!
//! Ids are numbers that only grow (`max(previous + 1, now in µs)`), so they
//! stay unique and ordered across restarts; they are the archive ids, the
//! RSM ids and the `<stanza-id/>` a recipient sees.

pub(super) mod form;
mod query;
pub(super) mod time;

use std::collections::{BTreeMap, HashMap};

use jid::{BareJid, Jid};
use serde::{Deserialize, Serialize};
use tributary_xmpp_xml::{Element, Node};

use super::iq::result_for;
use super::message::MsgType;
use super::persist::{Tok, from_tokens, to_tokens};
use super::sessions::deliver;
use super::{Hub, HubError, Output, SessionId, StanzaError};
use crate::ns;

/// Archived messages, one row per message.
pub(super) const ARCHIVE_TABLE: &str = "xmpp_mam";
/// Archiving preferences, one row per account.
pub(super) const PREFS_TABLE: &str = "xmpp_mam_prefs";

/// One archived message.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// When it was archived (Unix ms).
    pub(super) at: u64,
    /// The other party: a bare JID, or the occupant JID in a room archive.
    pub(super) with: Jid,
    /// The message as it was routed.
    pub(super) stanza: Element,
}

/// The default archiving policy (XEP-0313 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Default {
    /// Archive everything.
    Always,
    /// Archive nothing.
    Never,
    /// Archive messages with contacts in the roster.
    Roster,
}

/// An account's archiving preferences.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Prefs {
    default: Default,
    #[serde(default)]
    always: Vec<String>,
    #[serde(default)]
    never: Vec<String>,
}

impl std::default::Default for Prefs {
    fn default() -> Self {
        Prefs {
            default: Default::Always,
            always: Vec::new(),
            never: Vec::new(),
        }
    }
}

/// The archives and preferences.
#[derive(std::default::Default)]
pub(super) struct Mam {
    /// Messages by archive (account or room bare JID), by id.
    pub(super) archives: HashMap<BareJid, BTreeMap<u64, Entry>>,
    prefs: HashMap<BareJid, Prefs>,
    last_id: u64,
}

#[derive(Serialize, Deserialize)]
struct Row {
    at: u64,
    with: String,
    stanza: Vec<Tok>,
}

fn key(owner: &BareJid, id: u64) -> String {
    format!("{owner}/{id:020}")
}

/// Whether a message is worth archiving: a chat or normal message with a
/// body and no storage hint against it (XEP-0334).
fn archivable(m: &Element) -> bool {
    matches!(MsgType::of(m), MsgType::Chat | MsgType::Normal)
        && m.child("body", ns::CLIENT).is_some()
        && m.child("no-store", ns::HINTS).is_none()
        && m.child("no-permanent-store", ns::HINTS).is_none()
}

/// Removes `<stanza-id/>`s claiming to be from `by` (XEP-0359 §5: a sender
/// may not forge them).
fn strip_ids(m: &mut Element, by: &str) {
    m.children.retain(|n| match n {
        Node::Element(e) => !(e.is("stanza-id", ns::SID) && e.attr("by") == Some(by)),
        Node::Text(_) => true,
    });
}

impl Hub {
    fn archiving(&self) -> bool {
        self.config.mam_max_messages > 0
    }

    /// The next archive id.
    fn next_archive_id(&mut self, now: u64) -> u64 {
        let id = (self.mam.last_id + 1).max(now.saturating_mul(1000));
        self.mam.last_id = id;
        id
    }

    /// Appends to an archive, trimming the oldest beyond the cap; returns the id.
    fn append(
        &mut self,
        owner: &BareJid,
        with: Jid,
        stanza: Element,
        now: u64,
        out: &mut Vec<Output>,
    ) -> u64 {
        let id = self.next_archive_id(now);
        let row = Row {
            at: now,
            with: with.to_string(),
            stanza: to_tokens(&stanza),
        };
        out.push(Output::Put {
            table: ARCHIVE_TABLE,
            key: key(owner, id),
            // Strings and numbers only: serializing cannot fail.
            value: serde_json::to_vec(&row).unwrap_or_default(),
        });
        let archive = self.mam.archives.entry(owner.clone()).or_default();
        archive.insert(
            id,
            Entry {
                at: now,
                with,
                stanza,
            },
        );
        while archive.len() > self.config.mam_max_messages {
            let Some((old, _)) = archive.pop_first() else {
                break;
            };
            out.push(Output::Delete {
                table: ARCHIVE_TABLE,
                key: key(owner, old),
            });
        }
        id
    }

    /// Whether `owner`'s preferences archive a message with `with`.
    fn wants(&self, owner: &BareJid, with: &BareJid) -> bool {
        let prefs = self.mam.prefs.get(owner).cloned().unwrap_or_default();
        let listed = |list: &[String]| list.iter().any(|j| j.as_str() == with.as_str());
        if listed(&prefs.never) {
            return false;
        }
        if listed(&prefs.always) {
            return true;
        }
        match prefs.default {
            Default::Always => true,
            Default::Never => false,
            Default::Roster => self
                .rosters
                .get(owner)
                .is_some_and(|r| r.items.contains_key(with)),
        }
    }

    /// Archives a one-to-one message from `sender` to `recipient` (both
    /// local accounts) in both archives, and returns it with the
    /// recipient's `<stanza-id/>` (XEP-0359) added.
    pub(super) fn archive_chat(
        &mut self,
        sender: &BareJid,
        recipient: &BareJid,
        mut stanza: Element,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Element {
        if !self.archiving() {
            return stanza;
        }
        strip_ids(&mut stanza, recipient.as_str());
        if !archivable(&stanza) {
            return stanza;
        }
        if self.wants(sender, recipient) {
            self.append(
                sender,
                Jid::from(recipient.clone()),
                stanza.clone(),
                now,
                out,
            );
        }
        if sender != recipient && self.wants(recipient, sender) {
            let id = self.append(
                recipient,
                Jid::from(sender.clone()),
                stanza.clone(),
                now,
                out,
            );
            stanza.push_child(
                Element::new("stanza-id", ns::SID)
                    .with_attr("by", recipient.to_string())
                    .with_attr("id", id.to_string()),
            );
        }
        stanza
    }

    /// Archives a one-to-one message across servers in the archive of its
    /// local party only: the sender's when `local_is_sender`, else the
    /// recipient's (which gets its `<stanza-id/>`, as in
    /// [`Hub::archive_chat`]).
    pub(super) fn archive_remote_chat(
        &mut self,
        sender: &BareJid,
        recipient: &BareJid,
        mut stanza: Element,
        now: u64,
        local_is_sender: bool,
        out: &mut Vec<Output>,
    ) -> Element {
        if !self.archiving() {
            return stanza;
        }
        if !local_is_sender {
            strip_ids(&mut stanza, recipient.as_str());
        }
        if !archivable(&stanza) {
            return stanza;
        }
        if local_is_sender {
            if self.wants(sender, recipient) {
                let with = Jid::from(recipient.clone());
                self.append(sender, with, stanza.clone(), now, out);
            }
        } else if self.wants(recipient, sender) {
            let with = Jid::from(sender.clone());
            let id = self.append(recipient, with, stanza.clone(), now, out);
            stanza.push_child(
                Element::new("stanza-id", ns::SID)
                    .with_attr("by", recipient.to_string())
                    .with_attr("id", id.to_string()),
            );
        }
        stanza
    }

    /// Archives a groupchat message (`from` the occupant JID) in the room's
    /// archive; returns its id.
    pub(super) fn archive_room_message(
        &mut self,
        room: &BareJid,
        nick: &str,
        stanza: &Element,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Option<String> {
        if !self.archiving() {
            return None;
        }
        let with = Jid::new(&format!("{room}/{nick}")).ok()?;
        Some(
            self.append(room, with, stanza.clone(), now, out)
                .to_string(),
        )
    }

    /// Drops an archive (a destroyed room, a deleted account).
    pub(super) fn mam_forget(&mut self, owner: &BareJid, out: &mut Vec<Output>) {
        if let Some(archive) = self.mam.archives.remove(owner) {
            for id in archive.keys() {
                out.push(Output::Delete {
                    table: ARCHIVE_TABLE,
                    key: key(owner, *id),
                });
            }
        }
        if self.mam.prefs.remove(owner).is_some() {
            out.push(Output::Delete {
                table: PREFS_TABLE,
                key: owner.to_string(),
            });
        }
    }

    /// An account's MAM IQ (query, form, preferences), addressed to its
    /// own bare JID or to nobody.
    pub(super) fn mam_iq(
        &mut self,
        session: SessionId,
        user: &BareJid,
        stanza: &Element,
        payload: &Element,
        out: &mut Vec<Output>,
    ) {
        let get = stanza.attr("type") == Some("get");
        match payload.name.as_str() {
            "query" if get => deliver(
                out,
                session,
                result_for(stanza).with_child(query::fields_form()),
            ),
            "query" => {
                let from = user.to_string();
                self.mam_query(session, user, &from, stanza, payload, out);
            }
            "prefs" if get => {
                let prefs = self.mam.prefs.get(user).cloned().unwrap_or_default();
                deliver(
                    out,
                    session,
                    result_for(stanza).with_child(prefs_element(&prefs)),
                );
            }
            "prefs" => match parse_prefs(payload) {
                Ok(prefs) => {
                    out.push(Output::Put {
                        table: PREFS_TABLE,
                        key: user.to_string(),
                        value: serde_json::to_vec(&prefs).unwrap_or_default(),
                    });
                    let el = prefs_element(&prefs);
                    self.mam.prefs.insert(user.clone(), prefs);
                    deliver(out, session, result_for(stanza).with_child(el));
                }
                Err(e) => self.bounce(session, stanza, e, out),
            },
            _ => self.bounce(session, stanza, StanzaError::service_unavailable(), out),
        }
    }

    /// Restores archives and preferences.
    pub(super) fn restore_mam(
        &mut self,
        table: &str,
        rows: Vec<(String, Vec<u8>)>,
    ) -> Result<(), HubError> {
        for (k, value) in rows {
            let corrupt = |message: String| HubError::Corrupt {
                table: table.to_string(),
                key: k.clone(),
                message,
            };
            if table == PREFS_TABLE {
                let owner = BareJid::new(&k).map_err(|e| corrupt(e.to_string()))?;
                let prefs: Prefs =
                    serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
                self.mam.prefs.insert(owner, prefs);
                continue;
            }
            let (owner, id) = k
                .rsplit_once('/')
                .ok_or_else(|| corrupt("key without an id".into()))?;
            let owner = BareJid::new(owner).map_err(|e| corrupt(e.to_string()))?;
            let id: u64 = id.parse().map_err(|_| corrupt("bad id".into()))?;
            let row: Row = serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
            let with = Jid::new(&row.with).map_err(|e| corrupt(e.to_string()))?;
            let stanza = from_tokens(row.stanza).map_err(corrupt)?;
            self.mam.last_id = self.mam.last_id.max(id);
            self.mam.archives.entry(owner).or_default().insert(
                id,
                Entry {
                    at: row.at,
                    with,
                    stanza,
                },
            );
        }
        if table == ARCHIVE_TABLE {
            self.refill_room_history();
        }
        Ok(())
    }

    /// Persistent rooms get their discussion history back from their archives.
    fn refill_room_history(&mut self) {
        for (jid, room) in self.muc.rooms.iter_mut() {
            let Some(archive) = self.mam.archives.get(jid) else {
                continue;
            };
            let skip = archive.len().saturating_sub(room.config.history_length);
            room.history.clear();
            for (id, e) in archive.iter().skip(skip) {
                let stanza = e.stanza.clone().with_child(
                    Element::new("stanza-id", ns::SID)
                        .with_attr("by", jid.to_string())
                        .with_attr("id", id.to_string()),
                );
                room.remember(stanza, e.at);
            }
        }
    }
}

fn prefs_element(p: &Prefs) -> Element {
    let list = |name: &str, jids: &[String]| {
        let mut e = Element::new(name, ns::MAM);
        for j in jids {
            e.push_child(Element::new("jid", ns::MAM).with_text(j.clone()));
        }
        e
    };
    let default = match p.default {
        Default::Always => "always",
        Default::Never => "never",
        Default::Roster => "roster",
    };
    Element::new("prefs", ns::MAM)
        .with_attr("default", default)
        .with_child(list("always", &p.always))
        .with_child(list("never", &p.never))
}

fn parse_prefs(e: &Element) -> Result<Prefs, StanzaError> {
    let default = match e.attr("default") {
        Some("always") => Default::Always,
        Some("never") => Default::Never,
        Some("roster") => Default::Roster,
        _ => {
            return Err(
                StanzaError::bad_request().with_text("default must be always, never or roster")
            );
        }
    };
    let list = |name: &str| -> Result<Vec<String>, StanzaError> {
        let mut jids = Vec::new();
        if let Some(l) = e.child(name, ns::MAM) {
            for j in l.elements().filter(|j| j.is("jid", ns::MAM)) {
                let jid = Jid::new(j.text().trim()).map_err(|_| StanzaError::jid_malformed())?;
                jids.push(jid.to_string());
            }
        }
        Ok(jids)
    };
    Ok(Prefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}
