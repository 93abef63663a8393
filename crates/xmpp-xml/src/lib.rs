//! The XMPP XML stream (RFC 6120 §4, §11), sans-IO.
//!
//! Bytes go in, stream events come out: the stream header, each complete
//! top-level element (a stanza or a nonza) as an [`Element`] tree, and the
//! stream close. The restricted XML of RFC 6120 §11 is enforced by rxml (no
//! DTD, no entity declarations, no processing instructions, no comments); on
//! top of that, limits on element depth, stanza size and attribute count keep
//! a hostile client from making the server allocate without bound.

mod element;

pub use element::{Attribute, Element, Node, XML_NS};
