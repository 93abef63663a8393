//! Hub tests: stanzas are built with element builders (nothing is parsed)
//! and the outputs compared exactly, modulo attribute order and the
//! numbering of push ids.

mod blocking_tests;
mod bridge_tests;
mod carbons_tests;
mod iq_tests;
mod mam_tests;
mod message_tests;
mod muc_tests;
mod persist_tests;
mod presence_tests;
mod remote_tests;
mod roster_tests;
mod session_tests;
mod subscription_props;
mod subscription_tests;

use std::collections::BTreeMap;

use tributary_xmpp_xml::{Element, Node};

use super::roster::Sub;
use super::{Hub, HubConfig, Output, SessionId};
use crate::ns;

pub(super) const DOMAIN: &str = "localhost";
/// The fixed clock of the tests: 2024-01-02T03:04:05.678Z.
pub(super) const NOW: u64 = 1_704_164_645_678;
pub(super) const NOW_STAMP: &str = "2024-01-02T03:04:05.678Z";

/// The account database of the tests.
pub(super) fn accounts(user: &str) -> bool {
    matches!(user, "alice" | "bob" | "carol" | "dave")
}

/// `user@localhost`.
pub(super) fn bare(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// `user@localhost/res`.
pub(super) fn full(user: &str, res: &str) -> String {
    format!("{user}@{DOMAIN}/{res}")
}

/// A hub under test.
pub(super) struct H {
    pub(super) hub: Hub,
}

impl H {
    pub(super) fn new() -> Self {
        H {
            hub: Hub::new(HubConfig::new(DOMAIN)),
        }
    }

    pub(super) fn with_config(config: HubConfig) -> Self {
        H {
            hub: Hub::new(config),
        }
    }

    /// Binds `user/res` as `session`, expecting success and no output.
    pub(super) fn bind(&mut self, session: SessionId, user: &str, res: &str) {
        let mut out = Vec::new();
        let jid = self
            .hub
            .bind(session, user, Some(res), &mut out)
            .expect("bind");
        assert_eq!(jid.to_string(), full(user, res));
        assert!(out.is_empty(), "{out:?}");
    }

    pub(super) fn send(&mut self, session: SessionId, stanza: Element) -> Vec<Output> {
        let mut out = Vec::new();
        self.hub
            .handle_stanza(session, stanza, &accounts, NOW, &mut out);
        out
    }

    pub(super) fn unbind(&mut self, session: SessionId) -> Vec<Output> {
        let mut out = Vec::new();
        self.hub.unbind(session, NOW, &mut out);
        out
    }

    /// Binds, fetches the roster and sends initial presence (priority 0);
    /// the outputs are discarded.
    pub(super) fn online(&mut self, session: SessionId, user: &str, res: &str) {
        self.bind(session, user, res);
        self.send(session, roster_get("r0"));
        self.send(session, presence());
    }

    /// The roster state `owner` has for `contact`: (subscription, ask, pending-in, approved).
    pub(super) fn state(&self, owner: &str, contact: &str) -> (Sub, bool, bool, bool) {
        let o = jid::BareJid::new(&bare(owner)).expect("jid");
        let c = jid::BareJid::new(&bare(contact)).expect("jid");
        let Some(r) = self.hub.rosters.get(&o) else {
            return (Sub::None, false, false, false);
        };
        let item = r.items.get(&c).cloned().unwrap_or_default();
        (
            item.sub,
            item.ask,
            r.pending.contains_key(&c),
            item.approved,
        )
    }

    /// Whether `owner` has an item for `contact`.
    pub(super) fn has_item(&self, owner: &str, contact: &str) -> bool {
        let o = jid::BareJid::new(&bare(owner)).expect("jid");
        let c = jid::BareJid::new(&bare(contact)).expect("jid");
        self.hub
            .rosters
            .get(&o)
            .is_some_and(|r| r.items.contains_key(&c))
    }
}

// ---- stanza builders -------------------------------------------------------

pub(super) fn presence() -> Element {
    Element::new("presence", ns::CLIENT)
}

pub(super) fn presence_prio(priority: i8) -> Element {
    presence().with_child(Element::new("priority", ns::CLIENT).with_text(priority.to_string()))
}

/// `<presence to=.. type=..>`.
pub(super) fn presence_to(to: &str, ptype: &str) -> Element {
    let p = presence().with_attr("to", to);
    if ptype.is_empty() {
        p
    } else {
        p.with_attr("type", ptype)
    }
}

pub(super) fn message(to: &str, mtype: &str, body: &str) -> Element {
    let mut m = Element::new("message", ns::CLIENT).with_attr("to", to);
    if !mtype.is_empty() {
        m.set_attr("type", mtype);
    }
    m.with_child(Element::new("body", ns::CLIENT).with_text(body))
}

pub(super) fn iq(itype: &str, id: &str, to: Option<&str>, payload: Option<Element>) -> Element {
    let mut e = Element::new("iq", ns::CLIENT)
        .with_attr("type", itype)
        .with_attr("id", id);
    if let Some(to) = to {
        e.set_attr("to", to);
    }
    if let Some(p) = payload {
        e.push_child(p);
    }
    e
}

pub(super) fn roster_get(id: &str) -> Element {
    iq("get", id, None, Some(Element::new("query", ns::ROSTER)))
}

/// A roster item as the server writes it.
pub(super) fn item(jid: &str, sub: &str, ask: bool) -> Element {
    let mut e = Element::new("item", ns::ROSTER)
        .with_attr("jid", jid)
        .with_attr("subscription", sub);
    if ask {
        e.set_attr("ask", "subscribe");
    }
    e
}

/// A roster push to `to`.
pub(super) fn push(to: &str, item: Element) -> Element {
    iq(
        "set",
        "push",
        Some(to),
        Some(Element::new("query", ns::ROSTER).with_child(item)),
    )
}

/// An iq result, with the optional payload.
pub(super) fn result(id: &str, to: &str, from: Option<&str>, payload: Option<Element>) -> Element {
    let mut e = iq("result", id, Some(to), payload);
    if let Some(from) = from {
        e.set_attr("from", from);
    }
    e
}

/// A subscription stanza between bare JIDs.
pub(super) fn sub_stanza(from: &str, to: &str, kind: &str) -> Element {
    presence()
        .with_attr("from", bare(from))
        .with_attr("to", bare(to))
        .with_attr("type", kind)
}

/// Presence as delivered: `stanza` with `from` and `to`.
pub(super) fn with_addr(stanza: Element, from: &str, to: &str) -> Element {
    stanza.with_attr("from", from).with_attr("to", to)
}

/// `<presence type='unavailable' from= to=/>`.
pub(super) fn unavailable(from: &str, to: &str) -> Element {
    with_addr(presence().with_attr("type", "unavailable"), from, to)
}

/// The stanza-error element.
pub(super) fn error_el(kind: &str, condition: &str) -> Element {
    Element::new("error", ns::CLIENT)
        .with_attr("type", kind)
        .with_child(Element::new(condition, ns::STANZAS))
}

/// `stanza` (as sent, with `from` stamped) turned into an error reply.
pub(super) fn error_reply(stanza: &Element, kind: &str, condition: &str) -> Element {
    let mut e = Element::new(stanza.name.clone(), stanza.ns.clone());
    for a in &stanza.attrs {
        if !matches!(a.name.as_str(), "to" | "from" | "type") {
            e.attrs.push(a.clone());
        }
    }
    if let Some(f) = stanza.attr("from") {
        e.set_attr("to", f);
    }
    if let Some(t) = stanza.attr("to") {
        e.set_attr("from", t);
    }
    e.set_attr("type", "error");
    e.children = stanza.children.clone();
    e.with_child(error_el(kind, condition))
}

// ---- output comparison -----------------------------------------------------

/// An output with attribute order and push numbering normalized away, and
/// row values left out (they are checked through restore).
#[derive(Debug, PartialEq)]
pub(super) enum Shape {
    Deliver(SessionId, Element),
    Put(&'static str, String),
    Delete(&'static str, String),
    Close(SessionId, &'static str),
    Bridge(SessionId, Element),
    Remote(Element),
}

pub(super) fn norm(e: &Element) -> Element {
    let mut e = e.clone();
    e.attrs
        .sort_by(|a, b| (&a.ns, &a.name).cmp(&(&b.ns, &b.name)));
    if e.name == "iq" && e.attr("id").is_some_and(|i| i.starts_with("push")) {
        e.set_attr("id", "push");
    }
    e.children = e
        .children
        .iter()
        .map(|n| match n {
            Node::Element(c) => Node::Element(norm(c)),
            t => t.clone(),
        })
        .collect();
    e
}

pub(super) fn shapes(out: &[Output]) -> Vec<Shape> {
    out.iter()
        .map(|o| match o {
            Output::Deliver { session, stanza } => Shape::Deliver(*session, norm(stanza)),
            Output::Put { table, key, .. } => Shape::Put(table, key.clone()),
            Output::Delete { table, key } => Shape::Delete(table, key.clone()),
            Output::Close {
                session, condition, ..
            } => Shape::Close(*session, condition),
            Output::Bridge { session, stanza } => Shape::Bridge(*session, norm(stanza)),
            Output::Remote { stanza } => Shape::Remote(norm(stanza)),
        })
        .collect()
}

pub(super) fn d(session: SessionId, stanza: Element) -> Shape {
    Shape::Deliver(session, norm(&stanza))
}

pub(super) fn put(table: &'static str, key: &str) -> Shape {
    Shape::Put(table, key.to_string())
}

pub(super) fn del(table: &'static str, key: &str) -> Shape {
    Shape::Delete(table, key.to_string())
}

/// Asserts the outputs, element by element, with a readable diff.
#[track_caller]
pub(super) fn check(out: &[Output], expected: Vec<Shape>) {
    let actual = shapes(out);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "output #{i} differs\nall actual: {actual:#?}");
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "output count differs\nactual: {actual:#?}\nexpected: {expected:#?}"
    );
}

/// The stanzas delivered to `session`, normalized (compare with [`norm`]ed elements).
pub(super) fn to_session(out: &[Output], session: SessionId) -> Vec<Element> {
    out.iter()
        .filter_map(|o| match o {
            Output::Deliver { session: s, stanza } if *s == session => Some(norm(stanza)),
            _ => None,
        })
        .collect()
}

/// Applies Put/Delete outputs to a simulated store.
pub(super) fn apply(store: &mut BTreeMap<(&'static str, String), Vec<u8>>, out: &[Output]) {
    for o in out {
        match o {
            Output::Put { table, key, value } => {
                store.insert((table, key.clone()), value.clone());
            }
            Output::Delete { table, key } => {
                store.remove(&(*table, key.clone()));
            }
            _ => {}
        }
    }
}

/// A new hub restored from the simulated store.
pub(super) fn restart(store: &BTreeMap<(&'static str, String), Vec<u8>>) -> H {
    let mut h = H::new();
    for table in Hub::TABLES {
        let rows = store
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        h.hub.restore(table, rows).expect("restore");
    }
    h
}
