//! Serialization: the tree back to bytes, for routing stanzas on and for
//! the server's own stanzas.
//!
//! Elements are written with default-namespace declarations only (never a
//! prefix), so what comes out does not depend on how the peer spelled its
//! prefixes. Attribute namespaces get `xml:` or a generated `nsN:` prefix.

use crate::{Element, Node, XML_NS};

/// The namespace of `xmlns` declarations; attributes in it are declarations,
/// which the serializer derives from the `ns` fields instead.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

impl Element {
    /// Writes the element to `out`.
    ///
    /// An `xmlns='…'` is emitted when `self.ns != parent_default_ns` (and
    /// recursively for children relative to their parent), so pass the
    /// stream's default namespace (e.g. `"jabber:client"`) to write a stanza
    /// into a stream without repeating it. Namespaced attributes: [`XML_NS`]
    /// is written with the `xml:` prefix, any other namespace gets a
    /// generated prefix (`ns0`, `ns1`, …) declared on that element. Text and
    /// attribute values are escaped (`&`, `<`, `>`, `'`, `"`, and in
    /// attributes tab, CR and LF, which a parser would otherwise normalize;
    /// CR also in text). Empty elements self-close.
    ///
    /// Garbage in is not garbage out where it can be avoided: characters
    /// XML 1.0 cannot carry (most C0 controls, U+FFFE, U+FFFF) are written
    /// as U+FFFD; attributes that would be namespace declarations
    /// (`xmlns`, or in the xmlns namespace) are skipped, as declarations
    /// come from the `ns` fields; an attribute with `ns == Some("")` is
    /// written unprefixed. Element and attribute names are written as they
    /// are and must be valid XML names.
    pub fn write_to(&self, out: &mut Vec<u8>, parent_default_ns: &str) {
        out.push(b'<');
        out.extend_from_slice(self.name.as_bytes());
        if self.ns != parent_default_ns {
            out.extend_from_slice(b" xmlns='");
            escape(out, &self.ns, true);
            out.push(b'\'');
        }
        // Distinct attribute namespaces needing a prefix, in first-use order;
        // the prefix is `ns` + index.
        let mut prefixed: Vec<&str> = Vec::new();
        for a in &self.attrs {
            if let Some(ns) = a.ns.as_deref()
                && needs_prefix(ns)
                && !prefixed.contains(&ns)
            {
                prefixed.push(ns);
            }
        }
        for (i, ns) in prefixed.iter().enumerate() {
            out.extend_from_slice(format!(" xmlns:ns{i}='").as_bytes());
            escape(out, ns, true);
            out.push(b'\'');
        }
        for a in &self.attrs {
            let ns = a.ns.as_deref().unwrap_or("");
            if ns == XMLNS_NS || (ns.is_empty() && a.name == "xmlns") {
                continue;
            }
            out.push(b' ');
            if ns == XML_NS {
                out.extend_from_slice(b"xml:");
            } else if needs_prefix(ns) {
                let i = prefixed.iter().position(|p| *p == ns).unwrap_or(0);
                out.extend_from_slice(format!("ns{i}:").as_bytes());
            }
            out.extend_from_slice(a.name.as_bytes());
            out.extend_from_slice(b"='");
            escape(out, &a.value, true);
            out.push(b'\'');
        }
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape(out, t, false),
            }
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// Convenience: the element as a `String`, written with
    /// `parent_default_ns = ""` (so `xmlns` is declared on the root unless
    /// its namespace is empty).
    pub fn to_xml(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out, "");
        // write_to only ever writes UTF-8 (strings and ASCII markup).
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

fn needs_prefix(ns: &str) -> bool {
    !ns.is_empty() && ns != XML_NS && ns != XMLNS_NS
}

/// Whether XML 1.0 can carry `c` at all (production [2] Char; Rust `char`s
/// are never surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

fn escape(out: &mut Vec<u8>, s: &str, attribute: bool) {
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let replacement: &[u8] = match c {
            '&' => b"&amp;",
            '<' => b"&lt;",
            '>' => b"&gt;",
            '\'' if attribute => b"&apos;",
            '"' if attribute => b"&quot;",
            '\t' if attribute => b"&#9;",
            '\n' if attribute => b"&#10;",
            '\r' => b"&#13;",
            c if !is_xml_char(c) => "\u{FFFD}".as_bytes(),
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[plain..i]);
        out.extend_from_slice(replacement);
        plain = i + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[plain..]);
}
