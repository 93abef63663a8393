//! IQ handling (RFC 6120 §8.2.3): validation, routing to bound resources,
//! and dispatch of the IQs the server answers itself or on behalf of an
//! account (RFC 6121 §8.5.1, §8.5.2.1.3).

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use super::addressing::{Dest, account_exists};
use super::sessions::deliver;
use super::{Ctx, Hub, Output, StanzaError};
use crate::ns;

/// The `type='result'` reply to an IQ: same id, `to`/`from` swapped, no payload.
pub(super) fn result_for(stanza: &Element) -> Element {
    let mut r = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = stanza.attr("id") {
        r.set_attr("id", id);
    }
    if let Some(from) = stanza.attr("from") {
        r.set_attr("to", from);
    }
    if let Some(to) = stanza.attr("to") {
        r.set_attr("from", to);
    }
    r
}

/// Who a server-handled IQ is addressed to.
enum Scope {
    /// No `to`: the user's own account, server-wide queries go to the server.
    NoTo,
    /// The bare domain.
    Server,
    /// The user's own bare JID.
    OwnAccount,
    /// Another (existing) local account's bare JID.
    OtherAccount(BareJid),
}

impl Hub {
    pub(super) fn iq_from_client(
        &mut self,
        cx: &Ctx<'_>,
        to: Option<Jid>,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let has_id = stanza.attr("id").is_some();
        let request = match stanza.attr("type") {
            Some("get" | "set") => {
                if !has_id || stanza.elements().count() != 1 {
                    self.bounce(cx.session, &stanza, StanzaError::bad_request(), out);
                    return;
                }
                true
            }
            Some("result" | "error") => {
                if !has_id {
                    return;
                }
                false
            }
            _ => {
                self.bounce(cx.session, &stanza, StanzaError::bad_request(), out);
                return;
            }
        };
        let scope = match to {
            None => Scope::NoTo,
            Some(to) => match self.classify(&to) {
                Dest::Remote => {
                    if self.config.federation || request {
                        self.send_remote(Some(cx.session), stanza, out);
                    }
                    return;
                }
                Dest::Server {
                    with_resource: true,
                } => {
                    if request {
                        self.bounce(cx.session, &stanza, StanzaError::service_unavailable(), out);
                    }
                    return;
                }
                Dest::Server {
                    with_resource: false,
                } => Scope::Server,
                Dest::Local { bare, full: None } if bare == cx.user => Scope::OwnAccount,
                Dest::Local { bare, full } => {
                    if self.blocks(&cx.user, &to) {
                        if request {
                            self.bounce_blocked(cx.session, &stanza, out);
                        }
                        return;
                    }
                    if !account_exists(cx.accounts, &bare)
                        || self.blocks(&bare, &Jid::from(cx.from.clone()))
                    {
                        if request {
                            self.bounce(
                                cx.session,
                                &stanza,
                                StanzaError::service_unavailable(),
                                out,
                            );
                        }
                        return;
                    }
                    match full {
                        None => Scope::OtherAccount(bare),
                        Some(full) => {
                            match self.session_by_jid(&full) {
                                Some(target) => deliver(out, target, stanza),
                                None if request => self.bounce(
                                    cx.session,
                                    &stanza,
                                    StanzaError::service_unavailable(),
                                    out,
                                ),
                                None => {}
                            }
                            return;
                        }
                    }
                }
            },
        };
        // Results and errors addressed to the server or an account are
        // dropped, except answers to the capabilities queries of PEP.
        if !request {
            self.pep_iq_response(cx.session, &stanza, out);
        }
        if request {
            self.server_iq(cx, scope, &stanza, out);
        }
    }

    /// An iq get/set the server answers itself.
    fn server_iq(&mut self, cx: &Ctx<'_>, scope: Scope, stanza: &Element, out: &mut Vec<Output>) {
        let session = cx.session;
        let Some(payload) = stanza.elements().next().cloned() else {
            self.bounce(session, stanza, StanzaError::bad_request(), out);
            return;
        };
        let get = stanza.attr("type") == Some("get");
        let own = matches!(scope, Scope::NoTo | Scope::OwnAccount);
        let to_server = matches!(scope, Scope::NoTo | Scope::Server);
        match (payload.ns.as_str(), payload.name.as_str()) {
            (ns::ROSTER, "query") => match scope {
                Scope::NoTo | Scope::OwnAccount => {
                    self.roster_iq(session, &cx.user, stanza, &payload, out)
                }
                Scope::OtherAccount(_) => {
                    self.bounce(session, stanza, StanzaError::forbidden(), out)
                }
                Scope::Server => {
                    self.bounce(session, stanza, StanzaError::service_unavailable(), out)
                }
            },
            (ns::DISCO_INFO, "query") if get => {
                if to_server {
                    self.disco_info_server(session, stanza, &payload, out);
                } else {
                    self.disco_info_account(session, stanza, &payload, out);
                }
            }
            (ns::DISCO_ITEMS, "query") if get => self.disco_items(session, stanza, &payload, out),
            (ns::VERSION, "query") if get && to_server => {
                self.software_version(session, stanza, out)
            }
            (ns::PING, "ping") if get && (to_server || own) => {
                deliver(out, session, result_for(stanza))
            }
            (ns::BLOCKING, _) if own => self.blocking_iq(session, &cx.user, stanza, &payload, out),
            (ns::CARBONS, "enable" | "disable")
                if (to_server || own) && !super::remote_users::is_remote_session(session) =>
            {
                self.carbons_iq(session, stanza, &payload, out)
            }
            (ns::PUBSUB | ns::PUBSUB_OWNER, "pubsub") => match scope {
                Scope::NoTo | Scope::OwnAccount => {
                    self.pep_iq(cx, cx.user.clone(), stanza, &payload, out)
                }
                Scope::OtherAccount(ref bare) => {
                    self.pep_iq(cx, bare.clone(), stanza, &payload, out)
                }
                Scope::Server => {
                    self.bounce(session, stanza, StanzaError::service_unavailable(), out)
                }
            },
            (ns::MAM, "query" | "prefs") if own => {
                self.mam_iq(session, &cx.user, stanza, &payload, out)
            }
            (ns::VCARD, "vCard") => match scope {
                Scope::NoTo | Scope::OwnAccount => {
                    self.vcard_iq(session, &cx.user, true, stanza, &payload, out)
                }
                Scope::OtherAccount(ref bare) => {
                    self.vcard_iq(session, bare, false, stanza, &payload, out)
                }
                Scope::Server => {
                    self.bounce(session, stanza, StanzaError::service_unavailable(), out)
                }
            },
            _ => self.bounce(session, stanza, StanzaError::service_unavailable(), out),
        }
    }
}
