//! Entity capabilities (XEP-0115) as PEP needs them: each resource's
//! `ver`, resolved once through a disco#info query to that resource (or
//! from the cache of verified hashes), so that PEP notifications go only to
//! resources whose features include `<node>+notify` (XEP-0163 §4.3).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine;
use jid::{BareJid, FullJid};
use sha1::{Digest, Sha1};
use tributary_xmpp_xml::{Element, XML_NS};

use super::super::SessionId;
use crate::ns;

/// Verified `ver` strings kept; the cache is cleared when it grows past this.
const MAX_CACHE: usize = 10_000;

/// A set of disco#info features.
pub(crate) type Features = Arc<BTreeSet<String>>;

struct SessionCaps {
    /// The `ver` last announced.
    ver: String,
    /// Its features, once resolved.
    features: Option<Features>,
}

struct Pending {
    session: SessionId,
    ver: String,
    /// `hash` attribute (`sha-1` is verified; legacy caps have none).
    hash: Option<String>,
}

/// What a presence stanza changed.
#[derive(Debug, PartialEq)]
pub(crate) enum CapsUpdate {
    /// No caps, or the same `ver` as before.
    Unchanged,
    /// The new `ver` was in the cache: the features are known now.
    Resolved,
    /// Send this disco#info query to the resource.
    Query(Element),
}

/// Capabilities of the bound resources and the cache of verified hashes.
#[derive(Default)]
pub(crate) struct Caps {
    sessions: HashMap<SessionId, SessionCaps>,
    cache: HashMap<String, Features>,
    pending: HashMap<String, Pending>,
    next_id: u64,
}

impl Caps {
    /// Available presence from `session` (`user`'s resource `full`): reads
    /// its `<c/>` element.
    pub(crate) fn presence(
        &mut self,
        session: SessionId,
        user: &BareJid,
        full: &FullJid,
        presence: &Element,
    ) -> CapsUpdate {
        let Some(c) = presence.child("c", ns::CAPS) else {
            return CapsUpdate::Unchanged;
        };
        let (Some(node), Some(ver)) = (c.attr("node"), c.attr("ver")) else {
            return CapsUpdate::Unchanged;
        };
        if self.sessions.get(&session).is_some_and(|s| s.ver == ver) {
            return CapsUpdate::Unchanged;
        }
        let hash = c.attr("hash").map(str::to_string);
        if hash.is_some()
            && let Some(features) = self.cache.get(ver).cloned()
        {
            self.sessions.insert(
                session,
                SessionCaps {
                    ver: ver.to_string(),
                    features: Some(features),
                },
            );
            return CapsUpdate::Resolved;
        }
        self.sessions.insert(
            session,
            SessionCaps {
                ver: ver.to_string(),
                features: None,
            },
        );
        self.pending.retain(|_, p| p.session != session);
        self.next_id += 1;
        let id = format!("caps{}", self.next_id);
        self.pending.insert(
            id.clone(),
            Pending {
                session,
                ver: ver.to_string(),
                hash,
            },
        );
        let query =
            Element::new("query", ns::DISCO_INFO).with_attr("node", format!("{node}#{ver}"));
        CapsUpdate::Query(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("id", id)
                .with_attr("from", user.to_string())
                .with_attr("to", full.to_string())
                .with_child(query),
        )
    }

    /// An iq result or error from `session`: if it answers one of our
    /// queries, records the features and returns true.
    pub(crate) fn response(&mut self, session: SessionId, iq: &Element) -> bool {
        let Some(id) = iq.attr("id") else {
            return false;
        };
        match self.pending.get(id) {
            Some(p) if p.session == session => {}
            _ => return false,
        }
        let Some(p) = self.pending.remove(id) else {
            return false;
        };
        let query = iq.child("query", ns::DISCO_INFO);
        let features: BTreeSet<String> = query
            .map(|q| {
                q.elements()
                    .filter(|f| f.is("feature", ns::DISCO_INFO))
                    .filter_map(|f| f.attr("var").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let features = Arc::new(features);
        if iq.attr("type") == Some("result")
            && p.hash.as_deref() == Some("sha-1")
            && query.is_some_and(|q| verification_string(q).is_some_and(|s| sha1_b64(&s) == p.ver))
        {
            if self.cache.len() >= MAX_CACHE {
                self.cache.clear();
            }
            self.cache.insert(p.ver.clone(), features.clone());
        }
        match self.sessions.get_mut(&session) {
            Some(s) if s.ver == p.ver => {
                s.features = Some(features);
                true
            }
            _ => false,
        }
    }

    /// Whether `session` announced interest in `node` (`<node>+notify`).
    pub(crate) fn wants(&self, session: SessionId, node: &str) -> bool {
        self.sessions
            .get(&session)
            .and_then(|s| s.features.as_ref())
            .is_some_and(|f| f.contains(&format!("{node}+notify")))
    }

    /// The session is gone.
    pub(crate) fn forget(&mut self, session: SessionId) {
        self.sessions.remove(&session);
        self.pending.retain(|_, p| p.session != session);
    }
}

fn sha1_b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// The verification string of XEP-0115 §5.1 for a disco#info result;
/// `None` for a result §5.4 says to refuse (duplicate identities or features,
/// forms without FORM_TYPE).
pub(crate) fn verification_string(query: &Element) -> Option<String> {
    let mut identities: Vec<String> = query
        .elements()
        .filter(|e| e.is("identity", ns::DISCO_INFO))
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.attr("category").unwrap_or(""),
                i.attr("type").unwrap_or(""),
                i.attr_ns(XML_NS, "lang").unwrap_or(""),
                i.attr("name").unwrap_or("")
            )
        })
        .collect();
    let mut features: Vec<&str> = query
        .elements()
        .filter(|e| e.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    identities.sort();
    features.sort();
    let (ni, nf) = (identities.len(), features.len());
    identities.dedup();
    features.dedup();
    if ni != identities.len() || nf != features.len() {
        return None;
    }
    let mut s = String::new();
    for i in &identities {
        s.push_str(i);
        s.push('<');
    }
    for f in &features {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<(String, String)> = Vec::new();
    for x in query
        .elements()
        .filter(|e| e.is("x", ns::DATA_FORMS) && e.attr("type") == Some("result"))
    {
        let mut form_type = None;
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        for f in x.elements().filter(|e| e.is("field", ns::DATA_FORMS)) {
            let var = f.attr("var").unwrap_or("").to_string();
            let mut values: Vec<String> = f
                .elements()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(|v| v.text())
                .collect();
            if var == "FORM_TYPE" {
                form_type = values.first().cloned();
                continue;
            }
            values.sort();
            fields.push((var, values));
        }
        let form_type = form_type?;
        fields.sort();
        let mut text = format!("{form_type}<");
        for (var, values) in fields {
            text.push_str(&var);
            text.push('<');
            for v in values {
                text.push_str(&v);
                text.push('<');
            }
        }
        forms.push((form_type, text));
    }
    forms.sort();
    for (_, text) in forms {
        s.push_str(&text);
    }
    Some(s)
}
