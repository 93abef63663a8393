//! The stored form of the hub's state: table names, row encodings (JSON),
//! a flat token encoding of elements, and [`Hub::restore`].

use jid::{BareJid, Jid};
use serde::{Deserialize, Serialize};
use tributary_xmpp_xml::{Attribute, Element, Node};

use super::roster::{Item, Roster, Sub};
use super::{Hub, HubError, Output};

/// Rosters, one row per user: items, pending inbound requests, version.
pub(super) const ROSTER_TABLE: &str = "xmpp_roster";
/// Offline messages, one row per message.
pub(super) const OFFLINE_TABLE: &str = "xmpp_offline";
/// vcard-temp, one row per user.
pub(super) const VCARD_TABLE: &str = "xmpp_vcard";
/// Blocklists, one row per user.
pub(super) const BLOCKLIST_TABLE: &str = "xmpp_blocklist";

/// One token of an element written depth-first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// Start of an element.
    #[serde(rename = "s")]
    Start {
        n: String,
        ns: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        a: Vec<Attr>,
    },
    /// Character data.
    #[serde(rename = "t")]
    Text(String),
    /// End of the innermost open element.
    #[serde(rename = "e")]
    End,
}

/// An attribute in the token encoding.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct Attr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ns: Option<String>,
    n: String,
    v: String,
}

/// Flattens an element (iteratively: no recursion on depth).
pub(super) fn to_tokens(root: &Element) -> Vec<Tok> {
    let mut toks = Vec::new();
    // Stack of (element, index of the next child to visit).
    let mut stack: Vec<(&Element, usize)> = vec![(root, 0)];
    toks.push(start_tok(root));
    while let Some((el, idx)) = stack.last_mut() {
        match el.children.get(*idx) {
            None => {
                toks.push(Tok::End);
                stack.pop();
            }
            Some(node) => {
                *idx += 1;
                match node {
                    Node::Text(t) => toks.push(Tok::Text(t.clone())),
                    Node::Element(child) => {
                        toks.push(start_tok(child));
                        stack.push((child, 0));
                    }
                }
            }
        }
    }
    toks
}

fn start_tok(el: &Element) -> Tok {
    Tok::Start {
        n: el.name.clone(),
        ns: el.ns.clone(),
        a: el
            .attrs
            .iter()
            .map(|a| Attr {
                ns: a.ns.clone(),
                n: a.name.clone(),
                v: a.value.clone(),
            })
            .collect(),
    }
}

/// Rebuilds an element from tokens (iteratively); exactly one balanced root.
pub(super) fn from_tokens(toks: Vec<Tok>) -> Result<Element, String> {
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    for tok in toks {
        if root.is_some() {
            return Err("tokens after the root element".into());
        }
        match tok {
            Tok::Start { n, ns, a } => {
                let mut el = Element::new(n, ns);
                el.attrs = a
                    .into_iter()
                    .map(|a| Attribute {
                        ns: a.ns,
                        name: a.n,
                        value: a.v,
                    })
                    .collect();
                stack.push(el);
            }
            Tok::Text(t) => match stack.last_mut() {
                Some(parent) => parent.children.push(Node::Text(t)),
                None => return Err("text outside the root element".into()),
            },
            Tok::End => {
                let el = stack.pop().ok_or("unbalanced end token")?;
                match stack.last_mut() {
                    Some(parent) => parent.push_child(el),
                    None => root = Some(el),
                }
            }
        }
    }
    root.ok_or_else(|| "no complete root element".into())
}

/// A roster row.
#[derive(Serialize, Deserialize)]
struct RosterRow {
    ver: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    items: Vec<ItemRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<PendingRow>,
}

#[derive(Serialize, Deserialize)]
struct ItemRow {
    jid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    sub: Sub,
    #[serde(default, skip_serializing_if = "is_false")]
    ask: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    approved: bool,
}

#[derive(Serialize, Deserialize)]
struct PendingRow {
    jid: String,
    stanza: Vec<Tok>,
}

/// An offline message row.
#[derive(Serialize, Deserialize)]
struct OfflineRow {
    stanza: Vec<Tok>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (string keys, no floats).
    serde_json::to_vec(value).unwrap_or_default()
}

/// The key of an offline message: sortable by user, then arrival.
pub(super) fn offline_key(bare: &BareJid, seq: u64) -> String {
    format!("{bare}/{seq:020}")
}

/// Encodes an offline message row.
pub(super) fn offline_value(stanza: &Element) -> Vec<u8> {
    json(&OfflineRow {
        stanza: to_tokens(stanza),
    })
}

/// Encodes a vCard row.
pub(super) fn vcard_value(vcard: &Element) -> Vec<u8> {
    json(&to_tokens(vcard))
}

/// Encodes a blocklist row.
pub(super) fn blocklist_value(items: &[Jid]) -> Vec<u8> {
    let items: Vec<&str> = items.iter().map(|j| j.as_str()).collect();
    json(&items)
}

fn roster_value(roster: &Roster) -> Vec<u8> {
    json(&RosterRow {
        ver: roster.ver,
        items: roster
            .items
            .iter()
            .map(|(jid, item)| ItemRow {
                jid: jid.to_string(),
                name: item.name.clone(),
                groups: item.groups.clone(),
                sub: item.sub,
                ask: item.ask,
                approved: item.approved,
            })
            .collect(),
        pending: roster
            .pending
            .iter()
            .map(|(jid, stanza)| PendingRow {
                jid: jid.to_string(),
                stanza: to_tokens(stanza),
            })
            .collect(),
    })
}

fn decode_roster(bytes: &[u8]) -> Result<Roster, String> {
    let row: RosterRow = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut roster = Roster {
        ver: row.ver,
        ..Roster::default()
    };
    for item in row.items {
        let jid = BareJid::new(&item.jid).map_err(|e| format!("item {}: {e}", item.jid))?;
        roster.items.insert(
            jid,
            Item {
                name: item.name,
                groups: item.groups,
                sub: item.sub,
                ask: item.ask,
                approved: item.approved,
            },
        );
    }
    for p in row.pending {
        let jid = BareJid::new(&p.jid).map_err(|e| format!("pending {}: {e}", p.jid))?;
        roster.pending.insert(jid, from_tokens(p.stanza)?);
    }
    Ok(roster)
}

impl Hub {
    /// Writes the user's roster row (after any change, before pushes).
    pub(super) fn save_roster(&self, bare: &BareJid, out: &mut Vec<Output>) {
        let key = bare.to_string();
        match self.rosters.get(bare) {
            Some(roster) => out.push(Output::Put {
                table: ROSTER_TABLE,
                key,
                value: roster_value(roster),
            }),
            None => out.push(Output::Delete {
                table: ROSTER_TABLE,
                key,
            }),
        }
    }

    pub(super) fn restore_table(
        &mut self,
        table: &str,
        rows: Vec<(String, Vec<u8>)>,
    ) -> Result<(), HubError> {
        let corrupt = |key: &str, message: String| HubError::Corrupt {
            table: table.to_string(),
            key: key.to_string(),
            message,
        };
        for (key, value) in rows {
            match table {
                ROSTER_TABLE => {
                    let bare = BareJid::new(&key).map_err(|e| corrupt(&key, e.to_string()))?;
                    let roster = decode_roster(&value).map_err(|m| corrupt(&key, m))?;
                    self.rosters.insert(bare, roster);
                }
                OFFLINE_TABLE => {
                    let (user, seq) = key
                        .rsplit_once('/')
                        .ok_or_else(|| corrupt(&key, "key without a sequence".into()))?;
                    let bare = BareJid::new(user).map_err(|e| corrupt(&key, e.to_string()))?;
                    let seq: u64 = seq
                        .parse()
                        .map_err(|_| corrupt(&key, "bad sequence number".into()))?;
                    let row: OfflineRow =
                        serde_json::from_slice(&value).map_err(|e| corrupt(&key, e.to_string()))?;
                    let stanza = from_tokens(row.stanza).map_err(|m| corrupt(&key, m))?;
                    self.offline.entry(bare).or_default().insert(seq, stanza);
                    self.next_offline_seq = self.next_offline_seq.max(seq.saturating_add(1));
                }
                VCARD_TABLE => {
                    let bare = BareJid::new(&key).map_err(|e| corrupt(&key, e.to_string()))?;
                    let toks: Vec<Tok> =
                        serde_json::from_slice(&value).map_err(|e| corrupt(&key, e.to_string()))?;
                    let vcard = from_tokens(toks).map_err(|m| corrupt(&key, m))?;
                    self.vcards.insert(bare, vcard);
                }
                BLOCKLIST_TABLE => {
                    let bare = BareJid::new(&key).map_err(|e| corrupt(&key, e.to_string()))?;
                    let items: Vec<String> =
                        serde_json::from_slice(&value).map_err(|e| corrupt(&key, e.to_string()))?;
                    let mut list = Vec::with_capacity(items.len());
                    for item in items {
                        list.push(
                            Jid::new(&item).map_err(|e| corrupt(&key, format!("{item}: {e}")))?,
                        );
                    }
                    self.blocklists.insert(bare, list);
                }
                _ => return Err(corrupt(&key, "unknown table".into())),
            }
        }
        Ok(())
    }
}
