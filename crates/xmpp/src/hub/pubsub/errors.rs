//! Publish-subscribe errors (XEP-0060 §§6-8): a stanza error condition plus
//! the optional application-specific condition in `pubsub#errors`.

use tributary_xmpp_xml::{Element, Node};

use super::super::StanzaError;
use crate::ns;

/// An error reply of the pubsub service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PsError {
    /// The RFC 6120 error.
    pub(crate) base: StanzaError,
    /// The `pubsub#errors` condition, e.g. `nodeid-required`.
    pub(crate) app: Option<&'static str>,
    /// The `feature` attribute of `<unsupported/>`.
    pub(crate) feature: Option<&'static str>,
}

impl PsError {
    fn new(kind: &'static str, condition: &'static str, app: Option<&'static str>) -> Self {
        PsError {
            base: StanzaError::new(kind, condition),
            app,
            feature: None,
        }
    }

    /// The node does not exist (§7.1.3.3, §6.1.3.12).
    pub(crate) fn item_not_found() -> Self {
        Self::new("cancel", "item-not-found", None)
    }
    /// The requester may not do that (§7.1.3.1).
    pub(crate) fn forbidden() -> Self {
        Self::new("auth", "forbidden", None)
    }
    /// The node already exists (§8.1.1).
    pub(crate) fn conflict() -> Self {
        Self::new("cancel", "conflict", None)
    }
    /// A node id is required (§7.1.3.1, §6.5.9.3).
    pub(crate) fn nodeid_required() -> Self {
        Self::new("modify", "bad-request", Some("nodeid-required"))
    }
    /// An item id is required (§7.2.3.3).
    pub(crate) fn item_required() -> Self {
        Self::new("modify", "bad-request", Some("item-required"))
    }
    /// The request carries no or several payloads (§7.1.3.5).
    pub(crate) fn invalid_payload() -> Self {
        Self::new("modify", "bad-request", Some("invalid-payload"))
    }
    /// A publish without a payload where one is required (§7.1.3.6).
    pub(crate) fn payload_required() -> Self {
        Self::new("modify", "bad-request", Some("payload-required"))
    }
    /// The item is larger than the service accepts (§7.1.3.4).
    pub(crate) fn payload_too_big() -> Self {
        Self::new("modify", "not-acceptable", Some("payload-too-big"))
    }
    /// The subscription JID is not the requester's (§6.1.3.1).
    pub(crate) fn invalid_jid() -> Self {
        Self::new("modify", "bad-request", Some("invalid-jid"))
    }
    /// Presence access model, no presence subscription (§6.1.3.2).
    pub(crate) fn presence_subscription_required() -> Self {
        Self::new(
            "auth",
            "not-authorized",
            Some("presence-subscription-required"),
        )
    }
    /// Roster access model, not in an allowed group (§6.1.3.3).
    pub(crate) fn not_in_roster_group() -> Self {
        Self::new("auth", "not-authorized", Some("not-in-roster-group"))
    }
    /// Whitelist access model, not on the whitelist (§6.1.3.4).
    pub(crate) fn closed_node() -> Self {
        Self::new("cancel", "not-allowed", Some("closed-node"))
    }
    /// Not subscribed (§6.2.3.2).
    pub(crate) fn not_subscribed() -> Self {
        Self::new("cancel", "unexpected-request", Some("not-subscribed"))
    }
    /// Several subscriptions, no subid (§6.2.3.3).
    pub(crate) fn subid_required() -> Self {
        Self::new("modify", "bad-request", Some("subid-required"))
    }
    /// A subid that matches nothing (§6.2.3.5).
    pub(crate) fn invalid_subid() -> Self {
        Self::new("modify", "not-acceptable", Some("invalid-subid"))
    }
    /// Publish options not met (§7.1.5).
    pub(crate) fn precondition_not_met() -> Self {
        Self::new("cancel", "conflict", Some("precondition-not-met"))
    }
    /// A configuration value that is not acceptable (§8.2.5).
    pub(crate) fn not_acceptable() -> Self {
        Self::new("modify", "not-acceptable", None)
    }
    /// A malformed request.
    pub(crate) fn bad_request() -> Self {
        Self::new("modify", "bad-request", None)
    }
    /// Not supported: `<unsupported feature='…'/>` (§5.x, §6.1.3.x).
    pub(crate) fn unsupported(feature: &'static str) -> Self {
        PsError {
            feature: Some(feature),
            ..Self::new("cancel", "feature-not-implemented", Some("unsupported"))
        }
    }
    /// Too many nodes or items for this service.
    pub(crate) fn resource_constraint() -> Self {
        Self::new("wait", "resource-constraint", None)
    }
    /// Adds `<text/>`.
    pub(crate) fn with_text(mut self, text: impl Into<String>) -> Self {
        self.base = self.base.with_text(text);
        self
    }

    /// The error reply to `stanza`, without the request's payload (which
    /// may be a large item).
    pub(crate) fn reply_to(&self, stanza: &Element) -> Element {
        let mut reply = self.base.reply_to(stanza);
        reply
            .children
            .retain(|n| matches!(n, Node::Element(e) if e.is("error", ns::CLIENT)));
        if let Some(app) = self.app
            && let Some(error) = reply.child_mut("error", ns::CLIENT)
        {
            let mut el = Element::new(app, ns::PUBSUB_ERRORS);
            if let Some(f) = self.feature {
                el.set_attr("feature", f);
            }
            error.push_child(el);
        }
        reply
    }
}
