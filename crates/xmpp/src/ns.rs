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
