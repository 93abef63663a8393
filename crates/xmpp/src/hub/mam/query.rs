//! Archive queries (XEP-0313 §4): the form filters (`with`, `start`,
//! `end`, `before-id`, `after-id`, `ids`) and RSM paging (XEP-0059).

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use super::form::{self, Field};
use super::time::parse_stamp;
use super::{Entry, Hub};
use crate::hub::iq::result_for;
use crate::hub::muc::MucCx;
use crate::hub::muc::room::Affiliation;
use crate::hub::offline::timestamp;
use crate::hub::sessions::deliver;
use crate::hub::{Output, SessionId, StanzaError};
use crate::ns;

/// Results per page when the client does not say.
pub(in crate::hub) const DEFAULT_PAGE: usize = 50;
/// The most results in one page.
pub(in crate::hub) const MAX_PAGE: usize = 250;

/// The empty query form (XEP-0313 §5.1).
pub(super) fn fields_form() -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", "form");
    for f in [
        Field::hidden("FORM_TYPE", ns::MAM),
        Field::blank("with", "jid-single"),
        Field::blank("start", "text-single"),
        Field::blank("end", "text-single"),
        Field::blank("before-id", "text-single"),
        Field::blank("after-id", "text-single"),
        Field::blank("ids", "list-multi"),
    ] {
        x.push_child(f.to_element());
    }
    Element::new("query", ns::MAM).with_child(x)
}

/// A parsed query.
#[derive(Default, Debug)]
pub(in crate::hub) struct Filter {
    with: Option<Jid>,
    start: Option<u64>,
    end: Option<u64>,
    after_id: Option<u64>,
    before_id: Option<u64>,
    ids: Option<Vec<u64>>,
}

/// A parsed RSM `<set/>`.
#[derive(Default, Debug)]
pub(in crate::hub) struct Page {
    max: Option<usize>,
    after: Option<String>,
    /// `Some("")` asks for the last page.
    before: Option<String>,
}

fn bad(text: &str) -> StanzaError {
    StanzaError::bad_request().with_text(text)
}

/// An archive id as the client sent it; an unknown id is `item-not-found`.
fn id_in(
    archive: Option<&std::collections::BTreeMap<u64, Entry>>,
    s: &str,
) -> Result<u64, StanzaError> {
    s.parse::<u64>()
        .ok()
        .filter(|id| archive.is_some_and(|a| a.contains_key(id)))
        .ok_or_else(|| StanzaError::item_not_found().with_text(format!("no message with id {s}")))
}

impl Filter {
    fn parse(query: &Element) -> Result<Self, StanzaError> {
        let mut f = Filter::default();
        let Some(x) = query.child("x", ns::DATA_FORMS) else {
            return Ok(f);
        };
        let values = form::values(x);
        let one = |k: &str| {
            values
                .get(k)
                .and_then(|v| v.first())
                .map(|s| s.trim().to_string())
        };
        if let Some(t) = one("FORM_TYPE")
            && t != ns::MAM
        {
            return Err(bad("wrong FORM_TYPE"));
        }
        if let Some(w) = one("with").filter(|w| !w.is_empty()) {
            f.with = Some(Jid::new(&w).map_err(|_| StanzaError::jid_malformed())?);
        }
        if let Some(s) = one("start").filter(|s| !s.is_empty()) {
            f.start = Some(parse_stamp(&s).ok_or_else(|| bad("start is not a date-time"))?);
        }
        if let Some(s) = one("end").filter(|s| !s.is_empty()) {
            f.end = Some(parse_stamp(&s).ok_or_else(|| bad("end is not a date-time"))?);
        }
        let num = |k: &str| -> Result<Option<u64>, StanzaError> {
            match one(k).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|_| {
                    StanzaError::item_not_found().with_text(format!("no message with id {s}"))
                }),
            }
        };
        f.after_id = num("after-id")?;
        f.before_id = num("before-id")?;
        if let Some(ids) = values.get("ids").filter(|v| !v.is_empty()) {
            f.ids = Some(ids.iter().filter_map(|s| s.trim().parse().ok()).collect());
        }
        Ok(f)
    }

    fn keeps(&self, id: u64, e: &Entry) -> bool {
        let with_ok = match &self.with {
            None => true,
            Some(w) if w.is_bare() => e.with.to_bare() == w.to_bare(),
            Some(w) => &e.with == w,
        };
        with_ok
            && self.start.is_none_or(|s| e.at >= s)
            && self.end.is_none_or(|t| e.at <= t)
            && self.after_id.is_none_or(|a| id > a)
            && self.before_id.is_none_or(|b| id < b)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&id))
    }
}

impl Page {
    fn parse(query: &Element) -> Result<Self, StanzaError> {
        let mut p = Page::default();
        let Some(set) = query.child("set", ns::RSM) else {
            return Ok(p);
        };
        if let Some(m) = set.child("max", ns::RSM) {
            p.max = Some(
                m.text()
                    .trim()
                    .parse()
                    .map_err(|_| bad("max is not a number"))?,
            );
        }
        p.after = set
            .child("after", ns::RSM)
            .map(|a| a.text().trim().to_string());
        p.before = set
            .child("before", ns::RSM)
            .map(|b| b.text().trim().to_string());
        Ok(p)
    }
}

/// The ids of one page among the `matched` ids (ascending), the index of
/// its first item, and whether the query is complete (no more results in
/// the paging direction).
pub(in crate::hub) fn paginate(
    matched: &[u64],
    max: usize,
    after: Option<u64>,
    before: Option<Option<u64>>,
) -> (usize, &[u64], bool) {
    match before {
        Some(limit) => {
            let end = match limit {
                Some(b) => matched.partition_point(|&id| id < b),
                None => matched.len(),
            };
            let start = end.saturating_sub(max);
            (start, &matched[start..end], start == 0)
        }
        None => {
            let start = match after {
                Some(a) => matched.partition_point(|&id| id <= a),
                None => 0,
            };
            let end = (start + max).min(matched.len());
            (start, &matched[start..end], end == matched.len())
        }
    }
}

impl Hub {
    /// Runs a query on `owner`'s archive; results go to `session` from
    /// `from` (the archive's JID), then the `<fin/>`.
    pub(in crate::hub) fn mam_query(
        &self,
        session: SessionId,
        owner: &BareJid,
        from: &str,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) {
        match self.run_query(owner, from, stanza, query) {
            Ok(stanzas) => {
                for s in stanzas {
                    deliver(out, session, s);
                }
            }
            Err(e) => self.bounce(session, stanza, e, out),
        }
    }

    fn run_query(
        &self,
        owner: &BareJid,
        from: &str,
        stanza: &Element,
        query: &Element,
    ) -> Result<Vec<Element>, StanzaError> {
        let filter = Filter::parse(query)?;
        let page = Page::parse(query)?;
        let archive = self.mam.archives.get(owner);
        if let Some(a) = filter.after_id {
            id_in(archive, &a.to_string())?;
        }
        if let Some(b) = filter.before_id {
            id_in(archive, &b.to_string())?;
        }
        let after = match page.after.as_deref() {
            None | Some("") => None,
            Some(a) => Some(id_in(archive, a)?),
        };
        let before = match page.before.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(b) => Some(Some(id_in(archive, b)?)),
        };
        let matched: Vec<u64> = archive
            .map(|a| {
                a.iter()
                    .filter(|(id, e)| filter.keeps(**id, e))
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        let max = page.max.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
        let (index, ids, complete) = paginate(&matched, max, after, before);
        let to = stanza.attr("from").unwrap_or_default();
        let mut stanzas = Vec::with_capacity(ids.len() + 1);
        for id in ids {
            let Some(e) = archive.and_then(|a| a.get(id)) else {
                continue;
            };
            let mut result = Element::new("result", ns::MAM).with_attr("id", id.to_string());
            if let Some(q) = query.attr("queryid") {
                result.set_attr("queryid", q);
            }
            let forwarded = Element::new("forwarded", ns::FORWARD)
                .with_child(Element::new("delay", ns::DELAY).with_attr("stamp", timestamp(e.at)))
                .with_child(e.stanza.clone());
            result.push_child(forwarded);
            stanzas.push(
                Element::new("message", ns::CLIENT)
                    .with_attr("from", from)
                    .with_attr("to", to)
                    .with_child(result),
            );
        }
        let mut set = Element::new("set", ns::RSM);
        if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
            set.push_child(
                Element::new("first", ns::RSM)
                    .with_attr("index", index.to_string())
                    .with_text(first.to_string()),
            );
            set.push_child(Element::new("last", ns::RSM).with_text(last.to_string()));
        }
        set.push_child(Element::new("count", ns::RSM).with_text(matched.len().to_string()));
        let mut fin = Element::new("fin", ns::MAM).with_child(set);
        if complete {
            fin.set_attr("complete", "true");
        }
        stanzas.push(result_for(stanza).with_child(fin));
        Ok(stanzas)
    }

    /// A MAM IQ addressed to a room: queries by those allowed in.
    pub(in crate::hub) fn room_mam_iq(
        &self,
        cx: &MucCx,
        room: &BareJid,
        stanza: &Element,
        payload: &Element,
        out: &mut Vec<Output>,
    ) {
        let Some(r) = self.muc.rooms.get(room) else {
            return self.bounce(cx.session, stanza, StanzaError::item_not_found(), out);
        };
        let aff = r.affiliation(&cx.from.to_bare());
        let occupant = r.by_session(cx.session).is_some();
        let allowed = aff != Affiliation::Outcast
            && (occupant || !r.config.members_only || aff >= Affiliation::Member);
        if !allowed {
            return self.bounce(cx.session, stanza, StanzaError::forbidden(), out);
        }
        match (payload.name.as_str(), stanza.attr("type")) {
            ("query", Some("get")) => deliver(
                out,
                cx.session,
                result_for(stanza).with_child(fields_form()),
            ),
            ("query", Some("set")) => {
                self.mam_query(cx.session, room, room.as_str(), stanza, payload, out)
            }
            _ => self.bounce(cx.session, stanza, StanzaError::service_unavailable(), out),
        }
    }
}
