//! Builders for stream errors (RFC 6120 §4.9) and stanza errors (§8.3).

use crate::ns;
use tributary_xmpp_xml::Element;

/// A `<stream:error/>` with the given defined condition and optional text.
pub fn stream_error(condition: &str, text: Option<&str>) -> Element {
    let mut error =
        Element::new("error", ns::STREAM).with_child(Element::new(condition, ns::STREAM_ERRORS));
    if let Some(text) = text {
        error.push_child(Element::new("text", ns::STREAM_ERRORS).with_text(text));
    }
    error
}

/// The `<error/>` child of a stanza error.
pub fn stanza_error_child(kind: &str, condition: &str, text: Option<&str>) -> Element {
    let mut error = Element::new("error", ns::CLIENT)
        .with_attr("type", kind)
        .with_child(Element::new(condition, ns::STANZAS));
    if let Some(text) = text {
        error.push_child(Element::new("text", ns::STANZAS).with_text(text));
    }
    error
}

/// An IQ error reply to `request`, which the connection answers itself
/// (before binding, or for stream-level IQs such as binding).
pub fn iq_error(request: &Element, kind: &str, condition: &str) -> Element {
    let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", "error");
    if let Some(id) = request.attr("id") {
        reply.set_attr("id", id);
    }
    reply.push_child(stanza_error_child(kind, condition, None));
    reply
}
