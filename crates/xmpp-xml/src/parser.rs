//! The incremental stream parser: rxml's raw events, our own namespace
//! resolution (rxml's resolver hides the namespace declarations, and the
//! stream header's default namespace is one of them), the tree builder and
//! the limits.

use rxml::error::EndOrError;
use rxml::parser::CommentMode;
use rxml::{Options, Parse, RawEvent, RawParser, RawQName, WithOptions};

use crate::{
    Attribute, Element, FRAMING_NS, Limits, Node, STREAM_NS, StreamEvent, XML_NS, XmlError,
};

/// The namespace of `xmlns` declarations themselves; nothing may be bound to
/// it (Namespaces in XML 1.0, §3).
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Incremental XMPP stream parser with limits; see the crate docs for the
/// buffering contract and how errors map to stream error conditions.
///
/// One parser serves one direction of one stream. TCP mode ([`new`]) reads
/// one long document rooted at `<stream:stream>` through [`feed`]; WebSocket
/// mode ([`framed`]) reads one standalone document per message through
/// [`feed_message`].
///
/// ```
/// use tributary_xmpp_xml::{Limits, StreamEvent, StreamParser};
///
/// let mut parser = StreamParser::new(Limits::default());
/// // What the socket delivered so far, not yet consumed by the parser.
/// let mut buf = b"<stream:stream xmlns='jabber:client' \
///     xmlns:stream='http://etherx.jabber.org/streams'><presence/> <mess".to_vec();
/// let mut events = Vec::new();
/// loop {
///     let (consumed, event) = parser.feed(&buf)?;
///     buf.drain(..consumed);
///     match event {
///         Some(event) => events.push(event),
///         None => break, // all of `buf` consumed: wait for the socket
///     }
/// }
/// assert!(matches!(&events[0], StreamEvent::Open { default_ns, .. } if default_ns == "jabber:client"));
/// assert!(matches!(&events[1], StreamEvent::Element(e) if e.name == "presence"));
/// assert!(buf.is_empty()); // `<mess` is buffered inside the parser
/// # Ok::<(), tributary_xmpp_xml::XmlError>(())
/// ```
///
/// [`new`]: StreamParser::new
/// [`framed`]: StreamParser::framed
/// [`feed`]: StreamParser::feed
/// [`feed_message`]: StreamParser::feed_message
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    framed: bool,
    raw: RawParser,
    tree: Tree,
    /// Bytes handed to rxml since the last event (the budget in use).
    event_bytes: usize,
    /// True at the start and right after an event, before any further byte
    /// went to rxml: rxml is between tokens, so whitespace can be skipped
    /// without it (it would only be discarded) and without counting it.
    at_boundary: bool,
    /// `</stream:stream>` seen; further input is ignored.
    closed: bool,
    /// The first few bytes of the document, to tell a processing
    /// instruction like `<?xml-stylesheet` from a broken XML declaration.
    doc_start: Vec<u8>,
    /// The error the stream died of; repeated until `reset`.
    failed: Option<XmlError>,
}

impl StreamParser {
    /// TCP mode: the stream is one long document rooted at
    /// `<stream:stream>`, fed in arbitrary pieces through
    /// [`feed`](Self::feed).
    pub fn new(limits: Limits) -> Self {
        Self::with_mode(limits, false)
    }

    /// WebSocket mode (RFC 7395): each WebSocket text message is one
    /// complete, standalone element; `<open/>` and `<close/>` in the framing
    /// namespace map to [`StreamEvent::Open`] and [`StreamEvent::Close`].
    /// Feed one whole message at a time via
    /// [`feed_message`](Self::feed_message).
    ///
    /// Messages are parsed independently: the parser does not check their
    /// order (`<open/>` first, nothing after `<close/>`), which is the
    /// session's business, and an error in one message does not affect the
    /// next.
    pub fn framed(limits: Limits) -> Self {
        Self::with_mode(limits, true)
    }

    fn with_mode(limits: Limits, framed: bool) -> Self {
        StreamParser {
            limits,
            framed,
            raw: new_raw_parser(&limits),
            tree: Tree::new(limits, !framed),
            event_bytes: 0,
            // Whitespace before the document is skipped too (rxml refuses
            // it); a keepalive racing a stream restart must not kill the
            // stream.
            at_boundary: true,
            closed: false,
            doc_start: Vec::new(),
            failed: None,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether this is a WebSocket-mode parser ([`StreamParser::framed`]).
    pub fn is_framed(&self) -> bool {
        self.framed
    }

    /// Parses from `input` until ONE event is complete or the input is
    /// exhausted, and returns how many bytes of `input` were consumed and the
    /// event, if one completed.
    ///
    /// The caller drops the consumed bytes and calls again with the rest
    /// (plus whatever arrives later). Without an event, all of `input` has
    /// been consumed: an incomplete event is buffered inside the parser,
    /// never more than `max_stanza_bytes` of it. With an event, consumption
    /// stops right after the event's last byte, so the caller can stop
    /// exactly after `<starttls/>` or SASL `<success/>` and treat what
    /// follows as it must (STARTTLS injection defence) before
    /// [`reset`](Self::reset). An event can complete with zero bytes consumed
    /// (the close of a self-closed `<stream:stream/>`), so call again until
    /// an event-less return before waiting for more input.
    ///
    /// Errors are fatal: the same error is returned from then on, until
    /// [`reset`](Self::reset). After [`StreamEvent::Close`], input is
    /// consumed and ignored.
    ///
    /// In WebSocket mode, `input` is taken to be one whole message: this is
    /// [`feed_message`](Self::feed_message), consuming all of it.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<StreamEvent>), XmlError> {
        if self.framed {
            let event = self.feed_message(input)?;
            return Ok((input.len(), Some(event)));
        }
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.feed_stream(input) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn feed_stream(&mut self, input: &[u8]) -> Result<(usize, Option<StreamEvent>), XmlError> {
        if self.closed {
            return Ok((input.len(), None));
        }
        let max = self.limits.max_stanza_bytes;
        let mut pos = 0;
        loop {
            if self.at_boundary {
                pos += input[pos..]
                    .iter()
                    .take_while(|&&b| is_xml_space(b))
                    .count();
            }
            let available = &input[pos..];
            let budget = max.saturating_sub(self.event_bytes);
            let offered = available.len().min(budget);
            let mut slice = &available[..offered];
            let result = self.raw.parse(&mut slice, false);
            let used = offered - slice.len();
            if self.doc_start.len() < DOC_START {
                let take = used.min(DOC_START - self.doc_start.len());
                self.doc_start.extend_from_slice(&available[..take]);
            }
            pos += used;
            self.event_bytes += used;
            if used > 0 {
                self.at_boundary = false;
            }
            match result {
                Ok(Some(ev)) => {
                    let Some(step) = self.tree.handle(ev)? else {
                        continue;
                    };
                    self.event_bytes = 0;
                    self.at_boundary = true;
                    let event = match step {
                        Step::Root { header, default_ns } => {
                            StreamEvent::Open { header, default_ns }
                        }
                        Step::Element(e) => StreamEvent::Element(e),
                        Step::RootEnd => {
                            self.closed = true;
                            StreamEvent::Close
                        }
                    };
                    return Ok((pos, Some(event)));
                }
                Err(EndOrError::NeedMoreData) => {
                    if !slice.is_empty() {
                        // rxml promises to consume the whole buffer before
                        // asking for more; never report "no event" with
                        // bytes left over (callers would spin).
                        return Err(XmlError::NotWellFormed(
                            "parser stalled before the end of its input".into(),
                        ));
                    }
                    if offered < available.len() {
                        return Err(XmlError::PolicyViolation(format!(
                            "element larger than {max} bytes"
                        )));
                    }
                    // The input ran dry: give rxml's working buffers back
                    // (it reserves max_stanza_bytes for each at the next
                    // token) so that a connection waiting for input holds
                    // only the token it is in the middle of.
                    self.raw.release_temporaries();
                    return Ok((pos, None));
                }
                Err(EndOrError::Error(e)) => return Err(map_error(e, &self.doc_start)),
                // Only reachable at end of file, which a TCP stream never
                // signals; treat it like the close.
                Ok(None) => {
                    self.closed = true;
                    return Ok((input.len(), None));
                }
            }
        }
    }

    /// WebSocket mode: parses one complete message into exactly one event.
    ///
    /// A message larger than `max_stanza_bytes` is refused before parsing.
    /// `<open/>` and `<close/>` in the framing namespace must be empty
    /// ([`XmlError::BadFormat`] otherwise). Any other element, including
    /// ones in the stream namespace, is [`StreamEvent::Element`].
    ///
    /// On a TCP-mode parser this is [`feed`](Self::feed) with the
    /// requirement that `message` holds exactly one event (the stream
    /// header, one element, or the close); anything else is
    /// [`XmlError::BadFormat`].
    pub fn feed_message(&mut self, message: &[u8]) -> Result<StreamEvent, XmlError> {
        if !self.framed {
            return match self.feed(message)? {
                (n, Some(event)) if n == message.len() => Ok(event),
                (_, Some(_)) => self.fail(XmlError::BadFormat(
                    "data after the element in one message".into(),
                )),
                (_, None) => self.fail(XmlError::BadFormat(
                    "message does not hold a complete element".into(),
                )),
            };
        }
        let max = self.limits.max_stanza_bytes;
        if message.len() > max {
            return Err(XmlError::PolicyViolation(format!(
                "message larger than {max} bytes"
            )));
        }
        // Leading whitespace is skipped, as in TCP mode.
        let message = &message[message.iter().take_while(|&&b| is_xml_space(b)).count()..];
        let mut raw = new_raw_parser(&self.limits);
        let mut tree = Tree::new(self.limits, false);
        let mut slice = message;
        let mut found = None;
        let mut top_default = String::new();
        loop {
            match raw.parse(&mut slice, true) {
                Ok(Some(ev)) => {
                    if let Some(step) = tree.handle(ev)? {
                        top_default = tree.top_default.take().unwrap_or_default();
                        found = Some(step);
                    }
                }
                Ok(None) => break,
                Err(EndOrError::NeedMoreData) => {
                    return Err(XmlError::NotWellFormed("incomplete message".into()));
                }
                Err(EndOrError::Error(e)) => return Err(map_error(e, message)),
            }
        }
        match found {
            Some(Step::Element(e)) if e.is("open", FRAMING_NS) => {
                if !e.children.is_empty() {
                    return Err(XmlError::BadFormat("<open/> must be empty".into()));
                }
                Ok(StreamEvent::Open {
                    header: e,
                    default_ns: top_default,
                })
            }
            Some(Step::Element(e)) if e.is("close", FRAMING_NS) => {
                if !e.children.is_empty() {
                    return Err(XmlError::BadFormat("<close/> must be empty".into()));
                }
                Ok(StreamEvent::Close)
            }
            Some(Step::Element(e)) => Ok(StreamEvent::Element(e)),
            // A tree without a stream root never yields these.
            Some(Step::Root { .. } | Step::RootEnd) | None => {
                Err(XmlError::NotWellFormed("message holds no element".into()))
            }
        }
    }

    fn fail<T>(&mut self, e: XmlError) -> Result<T, XmlError> {
        self.failed = Some(e.clone());
        Err(e)
    }

    /// A stream restart (RFC 6120 §4.3.3, after STARTTLS and SASL success):
    /// forgets everything, including a past error or close, and expects a
    /// new stream header. Bytes the caller still holds are the caller's to
    /// drop or feed again.
    pub fn reset(&mut self) {
        *self = Self::with_mode(self.limits, self.framed);
    }
}

fn new_raw_parser(limits: &Limits) -> RawParser {
    let options = Options {
        // Names and attribute values longer than this are refused by rxml
        // and text is split at it; the stanza budget is the limit that
        // matters, so keep rxml's out of its way (but never zero: rxml needs
        // room to work).
        max_token_length: limits.max_stanza_bytes.max(64),
        comments: CommentMode::Reject,
        ..Options::default()
    };
    <RawParser as WithOptions>::with_options(options)
}

/// How much of the document start [`map_error`] looks at.
const DOC_START: usize = 6;

/// [`XmlError::from_rxml`], plus: rxml takes any `<?xml` at the very start
/// of a document for an XML declaration, so a processing instruction whose
/// target begins with `xml` (`<?xml-stylesheet ...?>`) fails as a broken
/// declaration; it is restricted XML.
fn map_error(e: rxml::Error, doc: &[u8]) -> XmlError {
    let mapped = XmlError::from_rxml(e);
    let disguised_pi = doc.len() >= DOC_START && doc.starts_with(b"<?xml") && !is_xml_space(doc[5]);
    match mapped {
        XmlError::NotWellFormed(_) if disguised_pi => XmlError::RestrictedXml,
        other => other,
    }
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// What the tree builder completed.
#[derive(Debug)]
enum Step {
    /// The stream root's start tag (TCP mode).
    Root { header: Element, default_ns: String },
    /// A complete top-level element.
    Element(Element),
    /// The stream root's end tag (TCP mode).
    RootEnd,
}

/// Namespace declarations made on one element.
#[derive(Debug, Default)]
struct Scope {
    default: Option<String>,
    prefixes: Vec<(String, String)>,
}

/// A start tag being read.
#[derive(Debug)]
struct Head {
    prefix: Option<String>,
    name: String,
    attrs: Vec<(Option<String>, String, String)>,
    scope: Scope,
    count: usize,
}

/// Builds elements from rxml's raw events, resolving namespaces and
/// enforcing depth and attribute limits.
#[derive(Debug)]
struct Tree {
    limits: Limits,
    /// TCP mode: the first element is the stream root, which is reported on
    /// its start tag and whose children are the top-level elements.
    stream_root: bool,
    root_open: bool,
    scopes: Vec<Scope>,
    /// Elements under construction; `[0]` is the top-level one.
    open: Vec<Element>,
    head: Option<Head>,
    /// The default namespace declared on the current top-level element (for
    /// the WebSocket `<open/>`).
    top_default: Option<String>,
}

impl Tree {
    fn new(limits: Limits, stream_root: bool) -> Self {
        Tree {
            limits,
            stream_root,
            root_open: false,
            scopes: Vec::new(),
            open: Vec::new(),
            head: None,
            top_default: None,
        }
    }

    fn handle(&mut self, ev: RawEvent) -> Result<Option<Step>, XmlError> {
        match ev {
            RawEvent::XmlDeclaration(..) => Ok(None),
            RawEvent::ElementHeadOpen(_, (prefix, name)) => {
                let is_root = self.stream_root && !self.root_open;
                if !is_root && self.open.len() >= self.limits.max_depth {
                    return Err(XmlError::PolicyViolation(format!(
                        "elements nested deeper than {}",
                        self.limits.max_depth
                    )));
                }
                self.head = Some(Head {
                    prefix: prefix.map(String::from),
                    name: String::from(name),
                    attrs: Vec::new(),
                    scope: Scope::default(),
                    count: 0,
                });
                Ok(None)
            }
            RawEvent::Attribute(_, qname, value) => {
                let head = self.head.as_mut().ok_or_else(out_of_order)?;
                head.count += 1;
                if head.count > self.limits.max_attributes {
                    return Err(XmlError::PolicyViolation(format!(
                        "more than {} attributes on one element",
                        self.limits.max_attributes
                    )));
                }
                head.attribute(qname, value)?;
                Ok(None)
            }
            RawEvent::ElementHeadClose(_) => {
                let head = self.head.take().ok_or_else(out_of_order)?;
                self.finish_head(head)
            }
            RawEvent::Text(_, text) => {
                match self.open.last_mut() {
                    Some(parent) => match parent.children.last_mut() {
                        Some(Node::Text(t)) => t.push_str(&text),
                        _ => parent.children.push(Node::Text(text)),
                    },
                    // Between top-level elements: whitespace keepalives
                    // (RFC 6120 §4.6.1) are fine, anything else is not.
                    None => {
                        if !text.bytes().all(is_xml_space) {
                            return Err(XmlError::BadFormat(
                                "text outside stanzas at stream level".into(),
                            ));
                        }
                    }
                }
                Ok(None)
            }
            RawEvent::ElementFoot(_) => {
                self.scopes.pop();
                match self.open.pop() {
                    Some(done) => match self.open.last_mut() {
                        Some(parent) => {
                            parent.children.push(Node::Element(done));
                            Ok(None)
                        }
                        None => Ok(Some(Step::Element(done))),
                    },
                    None if self.root_open => Ok(Some(Step::RootEnd)),
                    None => Err(out_of_order()),
                }
            }
        }
    }

    fn finish_head(&mut self, head: Head) -> Result<Option<Step>, XmlError> {
        let Head {
            prefix,
            name,
            attrs,
            scope,
            ..
        } = head;
        let declared_default = scope.default.clone();
        self.scopes.push(scope);
        let ns = self.lookup(prefix.as_deref())?.to_string();
        let mut resolved = Vec::with_capacity(attrs.len());
        for (prefix, name, value) in attrs {
            let ns = match prefix {
                None => None,
                Some(p) => Some(self.lookup(Some(&p))?.to_string()),
            };
            resolved.push(Attribute { ns, name, value });
        }
        // Unique Att Spec / Attributes Unique, in O(n log n).
        let mut keys: Vec<(Option<&str>, &str)> = resolved
            .iter()
            .map(|a| (a.ns.as_deref(), a.name.as_str()))
            .collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(XmlError::NotWellFormed("duplicate attribute".into()));
        }
        let element = Element {
            ns,
            name,
            attrs: resolved,
            children: Vec::new(),
        };
        if self.stream_root && !self.root_open {
            if !element.is("stream", STREAM_NS) {
                return Err(XmlError::InvalidNamespace);
            }
            self.root_open = true;
            return Ok(Some(Step::Root {
                header: element,
                default_ns: declared_default.unwrap_or_default(),
            }));
        }
        if self.open.is_empty() {
            self.top_default = declared_default;
        }
        self.open.push(element);
        Ok(None)
    }

    /// The namespace a prefix (or, for `None`, the default) is bound to in
    /// the current scope.
    fn lookup(&self, prefix: Option<&str>) -> Result<&str, XmlError> {
        match prefix {
            None => Ok(self
                .scopes
                .iter()
                .rev()
                .find_map(|s| s.default.as_deref())
                .unwrap_or("")),
            Some("xml") => Ok(XML_NS),
            Some(p) => self
                .scopes
                .iter()
                .rev()
                .find_map(|s| {
                    s.prefixes
                        .iter()
                        .find(|(declared, _)| declared == p)
                        .map(|(_, uri)| uri.as_str())
                })
                .ok_or_else(|| XmlError::NotWellFormed(format!("undeclared prefix {p:?}"))),
        }
    }
}

impl Head {
    fn attribute(&mut self, (prefix, name): RawQName, value: String) -> Result<(), XmlError> {
        let is_decl = match prefix.as_ref().map(|p| p.as_str()) {
            Some("xmlns") => true,
            None => name.as_str() == "xmlns",
            Some(_) => false,
        };
        if !is_decl {
            self.attrs
                .push((prefix.map(String::from), String::from(name), value));
            return Ok(());
        }
        // rxml has checked the `xml` prefix and namespace rules and that
        // prefixed declarations are not empty; the `xmlns` namespace and
        // duplicates are ours to check.
        if value == XMLNS_NS {
            return Err(XmlError::NotWellFormed(
                "a prefix bound to the xmlns namespace".into(),
            ));
        }
        if prefix.is_none() {
            if self.scope.default.is_some() {
                return Err(XmlError::NotWellFormed("duplicate attribute xmlns".into()));
            }
            self.scope.default = Some(value);
            return Ok(());
        }
        let name = String::from(name);
        if self.scope.prefixes.iter().any(|(p, _)| *p == name) {
            return Err(XmlError::NotWellFormed(format!(
                "duplicate attribute xmlns:{name}"
            )));
        }
        self.scope.prefixes.push((name, value));
        Ok(())
    }
}

/// rxml guarantees a well-formed event order; this is for the impossible.
fn out_of_order() -> XmlError {
    XmlError::NotWellFormed("unexpected parser event order".into())
}
