//! Namespace URIs used across the crate.

/// Client stanzas.
pub const CLIENT: &str = "jabber:client";
/// The stream element.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// Stream errors.
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Stanza errors.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// STARTTLS.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment (RFC 3921), still requested by some clients.
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 7395 framing for WebSocket.
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// Roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// Service discovery info (XEP-0030).
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Service discovery items (XEP-0030).
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// Software version (XEP-0092).
pub const VERSION: &str = "jabber:iq:version";
/// Ping (XEP-0199).
pub const PING: &str = "urn:xmpp:ping";
/// Stream management (XEP-0198).
pub const SM: &str = "urn:xmpp:sm:3";
/// Message carbons (XEP-0280).
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// Stanza forwarding (XEP-0297), used by carbons.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// Blocking command (XEP-0191).
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// vcard-temp (XEP-0054).
pub const VCARD: &str = "vcard-temp";
/// Entity capabilities (XEP-0115).
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// Client state indication (XEP-0352).
pub const CSI: &str = "urn:xmpp:csi:0";
/// In-band registration (XEP-0077), the IQ namespace.
pub const REGISTER: &str = "jabber:iq:register";
/// In-band registration stream feature.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// Delayed delivery (XEP-0203).
pub const DELAY: &str = "urn:xmpp:delay";
/// Hints (XEP-0334), e.g. `<no-copy/>` for carbons.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0440 channel-binding type advertisement.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// Roster versioning stream feature (RFC 6121 §2.6).
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// Presence subscription pre-approval stream feature (RFC 6121 §3.4).
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
/// Publish-subscribe (XEP-0060).
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// Publish-subscribe owner use cases (XEP-0060 §8).
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// Publish-subscribe event notifications (XEP-0060 §7.1.2).
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// Publish-subscribe application-specific error conditions (XEP-0060 §7).
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// Data forms (XEP-0004).
pub const DATA_FORMS: &str = "jabber:x:data";
/// HTTP File Upload (XEP-0363).
pub const HTTP_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// Multi-User Chat (XEP-0045): the join element.
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// Multi-User Chat: occupant use cases (`<x/>` in presence and messages).
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Multi-User Chat: moderator and admin use cases.
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// Multi-User Chat: owner use cases (configuration, destruction).
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// Multi-User Chat: the room configuration form type.
pub const MUC_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// Multi-User Chat: voice requests and their approval (XEP-0045 §7.13, §8.6).
pub const MUC_REQUEST: &str = "http://jabber.org/protocol/muc#request";
/// MUC self-ping server optimization (XEP-0410 §3.3).
pub const MUC_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
/// Message Archive Management (XEP-0313).
pub const MAM: &str = "urn:xmpp:mam:2";
/// Result Set Management (XEP-0059).
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// Unique and stable stanza ids (XEP-0359).
pub const SID: &str = "urn:xmpp:sid:0";
