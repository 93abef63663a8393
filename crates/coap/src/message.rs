//! The CoAP message (RFC 7252 §3): a 4-byte header, a token, options in
//! ascending number order with delta and extended encodings, and a payload
//! after the 0xFF marker.

use crate::error::DecodeError;
use crate::{MAX_OPTION_LEN, MAX_OPTIONS, MAX_TOKEN_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// The message type (RFC 7252 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// Confirmable: acknowledged or reset by the peer, retransmitted until then.
    Con = 0,
    /// Non-confirmable: sent once.
    Non = 1,
    /// Acknowledgement of a confirmable message, maybe with a piggybacked response.
    Ack = 2,
    /// Reset: the confirmable or non-confirmable message could not be processed.
    Rst = 3,
}

impl Type {
    fn from_bits(bits: u8) -> Type {
        match bits & 3 {
            0 => Type::Con,
            1 => Type::Non,
            2 => Type::Ack,
            _ => Type::Rst,
        }
    }
}

/// A request method or response code: 3-bit class and 5-bit detail (`c.dd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $class:literal . $detail:literal;)*) => {
        impl Code {
            $($(#[$doc])* pub const $name: Code = Code(($class << 5) | $detail);)*
        }
    };
}

codes! {
    /// 0.00 Empty message.
    EMPTY = 0 . 0;
    /// 0.01 GET.
    GET = 0 . 1;
    /// 0.02 POST.
    POST = 0 . 2;
    /// 0.03 PUT.
    PUT = 0 . 3;
    /// 0.04 DELETE.
    DELETE = 0 . 4;
    /// 2.01 Created.
    CREATED = 2 . 1;
    /// 2.02 Deleted.
    DELETED = 2 . 2;
    /// 2.03 Valid.
    VALID = 2 . 3;
    /// 2.04 Changed.
    CHANGED = 2 . 4;
    /// 2.05 Content.
    CONTENT = 2 . 5;
    /// 2.31 Continue (RFC 7959): the block was received, send the next one.
    CONTINUE = 2 . 31;
    /// 4.00 Bad Request.
    BAD_REQUEST = 4 . 0;
    /// 4.01 Unauthorized.
    UNAUTHORIZED = 4 . 1;
    /// 4.02 Bad Option: an unrecognised critical option.
    BAD_OPTION = 4 . 2;
    /// 4.03 Forbidden.
    FORBIDDEN = 4 . 3;
    /// 4.04 Not Found.
    NOT_FOUND = 4 . 4;
    /// 4.05 Method Not Allowed.
    METHOD_NOT_ALLOWED = 4 . 5;
    /// 4.06 Not Acceptable.
    NOT_ACCEPTABLE = 4 . 6;
    /// 4.08 Request Entity Incomplete (RFC 7959): a block is missing.
    REQUEST_ENTITY_INCOMPLETE = 4 . 8;
    /// 4.13 Request Entity Too Large (with Size1 saying how much is accepted).
    REQUEST_ENTITY_TOO_LARGE = 4 . 13;
    /// 4.15 Unsupported Content-Format.
    UNSUPPORTED_CONTENT_FORMAT = 4 . 15;
    /// 4.29 Too Many Requests (RFC 8516).
    TOO_MANY_REQUESTS = 4 . 29;
    /// 5.00 Internal Server Error.
    INTERNAL_SERVER_ERROR = 5 . 0;
    /// 5.03 Service Unavailable.
    SERVICE_UNAVAILABLE = 5 . 3;
}

impl Code {
    /// The class (0 request, 2 success, 4 client error, 5 server error).
    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail.
    pub fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// A request method (0.01 to 0.31).
    pub fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }

    /// A response (classes 2 to 5).
    pub fn is_response(self) -> bool {
        (2..=5).contains(&self.class())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

/// One option: its number and raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapOption {
    /// Option number (RFC 7252 §5.10, registry in [`crate::option`]).
    pub number: u16,
    /// Its value as sent.
    pub value: Bytes,
}

/// A CoAP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Type.
    pub mtype: Type,
    /// Method or response code.
    pub code: Code,
    /// Message id (deduplication, matching ACK/RST to CON/NON).
    pub message_id: u16,
    /// Token (0 to 8 bytes): matches responses to requests.
    pub token: Bytes,
    /// Options in ascending number order; repeated options keep their order.
    pub options: Vec<CoapOption>,
    /// Payload.
    pub payload: Bytes,
}

impl Message {
    /// A message with no token, options or payload.
    pub fn new(mtype: Type, code: Code, message_id: u16) -> Message {
        Message {
            mtype,
            code,
            message_id,
            token: Bytes::new(),
            options: Vec::new(),
            payload: Bytes::new(),
        }
    }

    /// The first value of option `number`.
    pub fn option(&self, number: u16) -> Option<&Bytes> {
        self.options
            .iter()
            .find(|o| o.number == number)
            .map(|o| &o.value)
    }

    /// Every value of option `number`, in order.
    pub fn options(&self, number: u16) -> impl Iterator<Item = &Bytes> {
        self.options
            .iter()
            .filter(move |o| o.number == number)
            .map(|o| &o.value)
    }

    /// Option `number` read as an unsigned integer (RFC 7252 §3.2); `None`
    /// when absent, `Some(Err(()))` when longer than 4 bytes.
    pub fn uint_option(&self, number: u16) -> Option<Result<u32, ()>> {
        self.option(number)
            .map(|v| crate::option::parse_uint(v).ok_or(()))
    }

    /// Adds an option, keeping the options sorted by number.
    pub fn add_option(&mut self, number: u16, value: impl Into<Bytes>) {
        let at = self
            .options
            .iter()
            .position(|o| o.number > number)
            .unwrap_or(self.options.len());
        self.options.insert(
            at,
            CoapOption {
                number,
                value: value.into(),
            },
        );
    }

    /// Adds an unsigned-integer option in its shortest form.
    pub fn add_uint_option(&mut self, number: u16, value: u32) {
        self.add_option(number, crate::option::uint_value(value));
    }

    /// Removes every value of option `number`.
    pub fn remove_option(&mut self, number: u16) {
        self.options.retain(|o| o.number != number);
    }

    /// The Uri-Path segments.
    pub fn path(&self) -> Vec<&[u8]> {
        self.options(crate::option::URI_PATH)
            .map(|b| &b[..])
            .collect()
    }
}

/// The type and message id of a datagram whose header is readable, even if
/// the rest is malformed (to Reset a malformed confirmable message).
pub fn peek_header(data: &[u8]) -> Option<(Type, u16)> {
    if data.len() < 4 || data[0] >> 6 != 1 {
        return None;
    }
    Some((
        Type::from_bits(data[0] >> 4),
        u16::from_be_bytes([data[2], data[3]]),
    ))
}

/// Reads an extended option delta or length (RFC 7252 §3.1).
fn extended(nibble: u8, data: &Bytes, pos: &mut usize) -> Result<usize, DecodeError> {
    match nibble {
        0..=12 => Ok(usize::from(nibble)),
        13 => {
            let b = *data.get(*pos).ok_or(DecodeError::Truncated)?;
            *pos += 1;
            Ok(usize::from(b) + 13)
        }
        14 => {
            let hi = *data.get(*pos).ok_or(DecodeError::Truncated)?;
            let lo = *data.get(*pos + 1).ok_or(DecodeError::Truncated)?;
            *pos += 2;
            Ok(usize::from(u16::from_be_bytes([hi, lo])) + 269)
        }
        _ => Err(DecodeError::ReservedNibble),
    }
}

/// Decodes one datagram. Option values and the payload are slices of `data`.
pub fn decode(data: Bytes) -> Result<Message, DecodeError> {
    if data.len() < 4 {
        return Err(DecodeError::TooShort(data.len()));
    }
    let version = data[0] >> 6;
    if version != 1 {
        return Err(DecodeError::BadVersion(version));
    }
    let mtype = Type::from_bits(data[0] >> 4);
    let tkl = data[0] & 0x0f;
    if usize::from(tkl) > MAX_TOKEN_LEN {
        return Err(DecodeError::TokenLength(tkl));
    }
    let code = Code(data[1]);
    if matches!(code.class(), 1 | 6 | 7) {
        return Err(DecodeError::ReservedClass(code.class()));
    }
    let message_id = u16::from_be_bytes([data[2], data[3]]);
    if code == Code::EMPTY && data.len() != 4 {
        return Err(DecodeError::NotEmpty);
    }
    let mut pos = 4 + usize::from(tkl);
    if pos > data.len() {
        return Err(DecodeError::Truncated);
    }
    let token = data.slice(4..pos);
    let mut options = Vec::new();
    let mut number: usize = 0;
    let mut payload = Bytes::new();
    while pos < data.len() {
        let b = data[pos];
        pos += 1;
        if b == 0xff {
            if pos == data.len() {
                return Err(DecodeError::EmptyPayload);
            }
            payload = data.slice(pos..);
            break;
        }
        let delta = extended(b >> 4, &data, &mut pos)?;
        let len = extended(b & 0x0f, &data, &mut pos)?;
        number += delta;
        let Ok(n) = u16::try_from(number) else {
            return Err(DecodeError::OptionNumber);
        };
        if len > MAX_OPTION_LEN {
            return Err(DecodeError::OptionTooLong { number: n, len });
        }
        if options.len() == MAX_OPTIONS {
            return Err(DecodeError::TooManyOptions);
        }
        let end = pos.checked_add(len).ok_or(DecodeError::Truncated)?;
        if end > data.len() {
            return Err(DecodeError::Truncated);
        }
        options.push(CoapOption {
            number: n,
            value: data.slice(pos..end),
        });
        pos = end;
    }
    Ok(Message {
        mtype,
        code,
        message_id,
        token,
        options,
        payload,
    })
}

/// The nibble and extension bytes for an option delta or length.
fn nibble(v: usize) -> (u8, Option<Vec<u8>>) {
    match v {
        0..=12 => (v as u8, None),
        13..=268 => (13, Some(vec![(v - 13) as u8])),
        _ => (14, Some(((v - 269) as u16).to_be_bytes().to_vec())),
    }
}

/// Encodes a message into `out`. The caller keeps within the limits
/// (a token of at most 8 bytes, option values below 65804 bytes); options
/// are written in ascending number order whatever order they are in.
pub fn encode(m: &Message, out: &mut BytesMut) {
    let tkl = m.token.len().min(MAX_TOKEN_LEN);
    out.reserve(4 + tkl + m.payload.len() + 1 + m.options.len() * 4);
    out.put_u8(0x40 | ((m.mtype as u8) << 4) | tkl as u8);
    out.put_u8(m.code.0);
    out.put_u16(m.message_id);
    out.put_slice(&m.token[..tkl]);
    let mut sorted: Vec<&CoapOption> = m.options.iter().collect();
    sorted.sort_by_key(|o| o.number);
    let mut prev = 0usize;
    for o in sorted {
        let delta = usize::from(o.number) - prev;
        prev = usize::from(o.number);
        let len = o.value.len().min(65_535 + 269);
        let (dn, dx) = nibble(delta);
        let (ln, lx) = nibble(len);
        out.put_u8((dn << 4) | ln);
        if let Some(x) = dx {
            out.put_slice(&x);
        }
        if let Some(x) = lx {
            out.put_slice(&x);
        }
        out.put_slice(&o.value[..len]);
    }
    if !m.payload.is_empty() {
        out.put_u8(0xff);
        out.put_slice(&m.payload);
    }
}

/// Encodes a message into a new buffer.
pub fn to_bytes(m: &Message) -> Bytes {
    let mut out = BytesMut::new();
    encode(m, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::option;

    #[test]
    fn round_trip_with_extended_options() {
        let mut m = Message::new(Type::Con, Code::PUT, 0x1234);
        m.token = Bytes::from_static(b"tok");
        m.add_option(option::URI_PATH, Bytes::from_static(b"ps"));
        m.add_option(option::URI_PATH, Bytes::from(vec![b'a'; 300]));
        m.add_uint_option(option::CONTENT_FORMAT, 50);
        m.add_option(option::NO_RESPONSE, Bytes::from_static(&[2]));
        m.payload = Bytes::from_static(b"hello");
        let bytes = to_bytes(&m);
        let d = decode(bytes).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.path().len(), 2);
        assert_eq!(d.uint_option(option::CONTENT_FORMAT), Some(Ok(50)));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(
            decode(Bytes::from_static(b"\x40\x01")),
            Err(DecodeError::TooShort(2))
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x80\x01\x00\x01")),
            Err(DecodeError::BadVersion(2))
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x49\x01\x00\x01")),
            Err(DecodeError::TokenLength(9))
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x40\x01\x00\x01\xff")),
            Err(DecodeError::EmptyPayload)
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x40\x01\x00\x01\xf1")),
            Err(DecodeError::ReservedNibble)
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x40\x01\x00\x01\xb5ab")),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x41\x00\x00\x01x")),
            Err(DecodeError::NotEmpty)
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x40\x21\x00\x01")),
            Err(DecodeError::ReservedClass(1))
        );
        assert_eq!(
            peek_header(b"\x40\x01\x12\x34\xf1"),
            Some((Type::Con, 0x1234))
        );
    }

    #[test]
    fn codes_print_as_class_dot_detail() {
        assert_eq!(Code::NOT_FOUND.to_string(), "4.04");
        assert_eq!(Code::CONTINUE.to_string(), "2.31");
        assert_eq!(Code::REQUEST_ENTITY_TOO_LARGE.to_string(), "4.13");
        assert!(Code::GET.is_request() && Code::CONTENT.is_response());
    }
}
