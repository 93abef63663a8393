//! Owner use cases (XEP-0045 §10): the `muc#roomconfig` form (instant and
//! reserved rooms), cancelling a new room, and destroying a room.

use jid::BareJid;
use tributary_xmpp_xml::Element;

use super::room::{Affiliation, Config, MAX_HISTORY, Role, Room};
use super::{MucCx, x_user};
use crate::hub::iq::result_for;
use crate::hub::mam::form::{self, Field};
use crate::hub::sessions::deliver;
use crate::hub::{Hub, Output, StanzaError};
use crate::ns;

const P: &str = "muc#roomconfig_";

/// The configuration form with the room's current values.
fn config_form(c: &Config) -> Element {
    let b = |v: bool| if v { "1" } else { "0" };
    let max = c.max_users.to_string();
    let history = c.history_length.to_string();
    let fields = [
        Field::hidden("FORM_TYPE", ns::MUC_ROOMCONFIG),
        Field::new("muc#roomconfig_roomname", "text-single", "Name", &c.name),
        Field::new(
            "muc#roomconfig_roomdesc",
            "text-single",
            "Description",
            &c.desc,
        ),
        Field::new(
            "muc#roomconfig_persistentroom",
            "boolean",
            "Persistent",
            b(c.persistent),
        ),
        Field::new(
            "muc#roomconfig_publicroom",
            "boolean",
            "Public (listed)",
            b(c.public),
        ),
        Field::new(
            "muc#roomconfig_membersonly",
            "boolean",
            "Members only",
            b(c.members_only),
        ),
        Field::new(
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            "Password protected",
            b(c.password.is_some()),
        ),
        Field::new(
            "muc#roomconfig_roomsecret",
            "text-private",
            "Password",
            c.password.as_deref().unwrap_or(""),
        ),
        Field::new(
            "muc#roomconfig_moderatedroom",
            "boolean",
            "Moderated",
            b(c.moderated),
        ),
        Field::new(
            "muc#roomconfig_whois",
            "list-single",
            "Who may discover real JIDs",
            if c.whois_anyone {
                "anyone"
            } else {
                "moderators"
            },
        )
        .with_options(&["moderators", "anyone"]),
        Field::new(
            "muc#roomconfig_maxusers",
            "text-single",
            "Most occupants (0: no limit)",
            &max,
        ),
        Field::new(
            "muc#roomconfig_changesubject",
            "boolean",
            "Participants may change the subject",
            b(c.change_subject),
        ),
        Field::new(
            "muc#roomconfig_allowinvites",
            "boolean",
            "Allow members to invite others",
            b(c.allow_invites),
        ),
        Field::new(
            "muc#roomconfig_historylength",
            "text-single",
            "History length",
            &history,
        ),
    ];
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "form")
        .with_child(Element::new("title", ns::DATA_FORMS).with_text("Room configuration"));
    for f in fields {
        x.push_child(f.to_element());
    }
    Element::new("query", ns::MUC_OWNER).with_child(x)
}

/// Applies a submitted form to `c`; unknown fields are ignored.
fn apply_form(c: &mut Config, x: &Element) -> Result<(), StanzaError> {
    let values = form::values(x);
    if let Some(t) = values.get("FORM_TYPE").and_then(|v| v.first())
        && t != ns::MUC_ROOMCONFIG
    {
        return Err(StanzaError::bad_request().with_text("wrong FORM_TYPE"));
    }
    let text = |k: &str| values.get(&format!("{P}{k}")).map(|v| v.join("\n"));
    let flag = |k: &str| -> Result<Option<bool>, StanzaError> {
        match text(k).as_deref() {
            None => Ok(None),
            Some("1" | "true") => Ok(Some(true)),
            Some("0" | "false" | "") => Ok(Some(false)),
            Some(_) => Err(StanzaError::not_acceptable().with_text(format!("{k}: not a boolean"))),
        }
    };
    let number = |k: &str| -> Result<Option<usize>, StanzaError> {
        match text(k).as_deref().map(str::trim) {
            None => Ok(None),
            Some("" | "none") => Ok(Some(0)),
            Some(n) => n
                .parse()
                .map(Some)
                .map_err(|_| StanzaError::not_acceptable().with_text(format!("{k}: not a number"))),
        }
    };
    let mut next = c.clone();
    if let Some(v) = text("roomname") {
        next.name = v;
    }
    if let Some(v) = text("roomdesc") {
        next.desc = v;
    }
    if let Some(v) = flag("persistentroom")? {
        next.persistent = v;
    }
    if let Some(v) = flag("publicroom")? {
        next.public = v;
    }
    if let Some(v) = flag("membersonly")? {
        next.members_only = v;
    }
    if let Some(v) = flag("moderatedroom")? {
        next.moderated = v;
    }
    if let Some(v) = flag("changesubject")? {
        next.change_subject = v;
    }
    if let Some(v) = flag("allowinvites")? {
        next.allow_invites = v;
    }
    if let Some(v) = text("whois") {
        next.whois_anyone = match v.as_str() {
            "anyone" => true,
            "moderators" | "" => false,
            _ => return Err(StanzaError::not_acceptable().with_text("whois: unknown value")),
        };
    }
    if let Some(v) = number("maxusers")? {
        next.max_users = v;
    }
    if let Some(v) = number("historylength")? {
        next.history_length = v.min(MAX_HISTORY);
    }
    let protected = flag("passwordprotectedroom")?.unwrap_or(c.password.is_some());
    let secret = text("roomsecret").or_else(|| c.password.clone());
    next.password = match secret {
        Some(s) if protected && !s.is_empty() => Some(s),
        _ => None,
    };
    *c = next;
    Ok(())
}

impl Hub {
    /// `muc#owner` get (the form) and set (submit, cancel, destroy).
    pub(super) fn muc_owner(
        &mut self,
        cx: &MucCx,
        room: &BareJid,
        stanza: &Element,
        query: &Element,
        get: bool,
        out: &mut Vec<Output>,
    ) {
        let owner = self
            .muc
            .rooms
            .get(room)
            .is_some_and(|r| r.affiliation(&cx.from.to_bare()) == Affiliation::Owner);
        if !owner {
            return self.bounce(cx.session, stanza, StanzaError::forbidden(), out);
        }
        if get {
            if let Some(r) = self.muc.rooms.get(room) {
                deliver(
                    out,
                    cx.session,
                    result_for(stanza).with_child(config_form(&r.config)),
                );
            }
            return;
        }
        if let Some(destroy) = query.child("destroy", ns::MUC_OWNER) {
            self.destroy_room(room, destroy, out);
            return deliver(out, cx.session, result_for(stanza));
        }
        let Some(x) = query.child("x", ns::DATA_FORMS) else {
            return self.bounce(cx.session, stanza, StanzaError::bad_request(), out);
        };
        match x.attr("type") {
            Some("cancel") => {
                if self.muc.rooms.get(room).is_some_and(|r| r.locked) {
                    self.destroy_room(room, &Element::new("destroy", ns::MUC_OWNER), out);
                }
                deliver(out, cx.session, result_for(stanza));
            }
            Some("submit") => {
                let Some(r) = self.muc.rooms.get_mut(room) else {
                    return;
                };
                let was = r.config.clone();
                let was_locked = r.locked;
                if let Err(e) = apply_form(&mut r.config, x) {
                    return self.bounce(cx.session, stanza, e, out);
                }
                r.locked = false;
                r.trim_history();
                if was.persistent && !r.config.persistent {
                    self.unsave_room(room, out);
                } else {
                    self.save_room(room, out);
                }
                deliver(out, cx.session, result_for(stanza));
                if let Some(r) = self.muc.rooms.get(room)
                    && !was_locked
                {
                    notify_config_change(r, &was, out);
                }
            }
            _ => self.bounce(cx.session, stanza, StanzaError::bad_request(), out),
        }
    }

    /// Destroys a room (§10.9): every occupant gets unavailable presence
    /// with `<destroy/>` (and its alternate venue and reason), then the room
    /// and its archive are forgotten.
    pub(super) fn destroy_room(
        &mut self,
        room: &BareJid,
        destroy: &Element,
        out: &mut Vec<Output>,
    ) {
        let Some(r) = self.muc.rooms.get(room) else {
            return;
        };
        let mut d = Element::new("destroy", ns::MUC_USER);
        if let Some(jid) = destroy.attr("jid") {
            d.set_attr("jid", jid);
        }
        if let Some(reason) = destroy.child("reason", ns::MUC_OWNER) {
            d.push_child(Element::new("reason", ns::MUC_USER).with_text(reason.text()));
        }
        let sessions: Vec<u64> = r.occupants.iter().map(|o| o.session).collect();
        for o in &r.occupants {
            let it = super::item(ns::MUC_USER, Affiliation::None, Role::None, None, None);
            let mut x = x_user(it, &[]);
            x.push_child(d.clone());
            let p = super::unavailable_base()
                .with_attr("from", r.occupant_jid(&o.nick))
                .with_attr("to", o.jid.to_string())
                .with_child(x);
            deliver(out, o.session, p);
        }
        for s in sessions {
            if let Some(set) = self.muc.joined.get_mut(&s) {
                set.remove(room);
                if set.is_empty() {
                    self.muc.joined.remove(&s);
                }
            }
        }
        self.forget_room(room, out);
    }

    /// Removes a room, its stored row and its archive.
    pub(super) fn forget_room(&mut self, room: &BareJid, out: &mut Vec<Output>) {
        let Some(r) = self.muc.rooms.remove(room) else {
            return;
        };
        if r.config.persistent && !r.locked {
            self.unsave_room(room, out);
        }
        self.mam_forget(room, out);
    }
}

/// Status 104 (and 172/173 when anonymity changed) to the occupants (§10.2.1).
fn notify_config_change(r: &Room, was: &Config, out: &mut Vec<Output>) {
    let mut codes = vec![104];
    if was.whois_anyone != r.config.whois_anyone {
        codes.push(if r.config.whois_anyone { 172 } else { 173 });
    }
    for o in &r.occupants {
        let mut x = Element::new("x", ns::MUC_USER);
        for c in &codes {
            x.push_child(Element::new("status", ns::MUC_USER).with_attr("code", c.to_string()));
        }
        let m = Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", r.jid.to_string())
            .with_attr("to", o.jid.to_string())
            .with_child(x);
        deliver(out, o.session, m);
    }
}
