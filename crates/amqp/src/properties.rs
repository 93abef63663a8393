//! Basic-class content properties and their property-flags encoding.

use bytes::{Bytes, BytesMut};

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;
use crate::shortstr::ShortStr;
use crate::table::{self, FieldTable};

/// The fourteen `basic` content properties carried by a content header frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicProperties {
    /// MIME content type.
    pub content_type: Option<ShortStr>,
    /// MIME content encoding.
    pub content_encoding: Option<ShortStr>,
    /// Application headers (also used by the headers exchange).
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent.
    pub delivery_mode: Option<u8>,
    /// Message priority, 0 to 9.
    pub priority: Option<u8>,
    /// Application correlation identifier.
    pub correlation_id: Option<ShortStr>,
    /// Address to reply to.
    pub reply_to: Option<ShortStr>,
    /// Message expiration (RabbitMQ: milliseconds as a decimal string).
    pub expiration: Option<ShortStr>,
    /// Application message identifier.
    pub message_id: Option<ShortStr>,
    /// Message timestamp, seconds since the epoch.
    pub timestamp: Option<u64>,
    /// Message type name (AMQP's `type`).
    pub kind: Option<ShortStr>,
    /// Creating user id (RabbitMQ validates it against the connection's user).
    pub user_id: Option<ShortStr>,
    /// Creating application id.
    pub app_id: Option<ShortStr>,
    /// Reserved, must be empty (deprecated in 0-9-1).
    pub cluster_id: Option<ShortStr>,
}

const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const KIND: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;
const CONTINUATION: u16 = 1;

impl BasicProperties {
    /// The property-flags word for the properties that are set.
    pub fn flags(&self) -> u16 {
        let mut f = 0;
        let mut set = |cond: bool, bit: u16| {
            if cond {
                f |= bit;
            }
        };
        set(self.content_type.is_some(), CONTENT_TYPE);
        set(self.content_encoding.is_some(), CONTENT_ENCODING);
        set(self.headers.is_some(), HEADERS);
        set(self.delivery_mode.is_some(), DELIVERY_MODE);
        set(self.priority.is_some(), PRIORITY);
        set(self.correlation_id.is_some(), CORRELATION_ID);
        set(self.reply_to.is_some(), REPLY_TO);
        set(self.expiration.is_some(), EXPIRATION);
        set(self.message_id.is_some(), MESSAGE_ID);
        set(self.timestamp.is_some(), TIMESTAMP);
        set(self.kind.is_some(), KIND);
        set(self.user_id.is_some(), USER_ID);
        set(self.app_id.is_some(), APP_ID);
        set(self.cluster_id.is_some(), CLUSTER_ID);
        f
    }

    /// Appends the flags word and the present properties.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = Writer::new(out);
        w.u16(self.flags());
        let s = |w: &mut Writer<'_>, v: &Option<ShortStr>| {
            if let Some(v) = v {
                w.shortstr(v);
            }
        };
        s(&mut w, &self.content_type);
        s(&mut w, &self.content_encoding);
        if let Some(h) = &self.headers {
            table::write_table(&mut w, h);
        }
        if let Some(v) = self.delivery_mode {
            w.u8(v);
        }
        if let Some(v) = self.priority {
            w.u8(v);
        }
        s(&mut w, &self.correlation_id);
        s(&mut w, &self.reply_to);
        s(&mut w, &self.expiration);
        s(&mut w, &self.message_id);
        if let Some(v) = self.timestamp {
            w.u64(v);
        }
        s(&mut w, &self.kind);
        s(&mut w, &self.user_id);
        s(&mut w, &self.app_id);
        s(&mut w, &self.cluster_id);
    }

    /// Decodes a property list (flags words then values) that fills `buf` exactly.
    pub fn decode(buf: Bytes) -> Result<BasicProperties, DecodeError> {
        let mut r = Reader::new(buf);
        let p = Self::read(&mut r)?;
        r.finish()?;
        Ok(p)
    }

    pub(crate) fn read(r: &mut Reader) -> Result<BasicProperties, DecodeError> {
        let flags = r.u16()?;
        // Flag continuation: more flag words follow while bit 0 is set. Basic defines only
        // fourteen properties, so later words must carry no property bits.
        let mut more = flags & CONTINUATION != 0;
        while more {
            let extra = r.u16()?;
            if extra & !CONTINUATION != 0 {
                return Err(DecodeError::UnknownPropertyFlags(extra));
            }
            more = extra & CONTINUATION != 0;
        }
        if flags & 0b10 != 0 {
            return Err(DecodeError::UnknownPropertyFlags(flags));
        }
        let s = |r: &mut Reader, bit: u16| -> Result<Option<ShortStr>, DecodeError> {
            if flags & bit != 0 {
                r.shortstr().map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(BasicProperties {
            content_type: s(r, CONTENT_TYPE)?,
            content_encoding: s(r, CONTENT_ENCODING)?,
            headers: if flags & HEADERS != 0 {
                Some(table::read_table(r, 0)?)
            } else {
                None
            },
            delivery_mode: if flags & DELIVERY_MODE != 0 {
                Some(r.u8()?)
            } else {
                None
            },
            priority: if flags & PRIORITY != 0 {
                Some(r.u8()?)
            } else {
                None
            },
            correlation_id: s(r, CORRELATION_ID)?,
            reply_to: s(r, REPLY_TO)?,
            expiration: s(r, EXPIRATION)?,
            message_id: s(r, MESSAGE_ID)?,
            timestamp: if flags & TIMESTAMP != 0 {
                Some(r.u64()?)
            } else {
                None
            },
            kind: s(r, KIND)?,
            user_id: s(r, USER_ID)?,
            app_id: s(r, APP_ID)?,
            cluster_id: s(r, CLUSTER_ID)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::FieldValue;

    #[test]
    fn empty_is_two_zero_octets() {
        let mut out = BytesMut::new();
        BasicProperties::default().encode(&mut out);
        assert_eq!(&out[..], b"\x00\x00");
        assert_eq!(
            BasicProperties::decode(out.freeze()).unwrap(),
            BasicProperties::default()
        );
    }

    #[test]
    fn golden_content_type_and_persistent() {
        let p = BasicProperties {
            content_type: Some("text/plain".into()),
            delivery_mode: Some(2),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(&out[..], b"\x90\x00\x0atext/plain\x02");
        assert_eq!(BasicProperties::decode(out.freeze()).unwrap(), p);
    }

    #[test]
    fn all_roundtrip() {
        let mut h = FieldTable::new();
        h.insert("x", FieldValue::I32(1));
        let p = BasicProperties {
            content_type: Some("a".into()),
            content_encoding: Some("b".into()),
            headers: Some(h),
            delivery_mode: Some(1),
            priority: Some(9),
            correlation_id: Some("c".into()),
            reply_to: Some("d".into()),
            expiration: Some("60000".into()),
            message_id: Some("e".into()),
            timestamp: Some(42),
            kind: Some("f".into()),
            user_id: Some("guest".into()),
            app_id: Some("g".into()),
            cluster_id: Some("".into()),
        };
        assert_eq!(p.flags(), 0xfffc);
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(BasicProperties::decode(out.freeze()).unwrap(), p);
    }

    #[test]
    fn continuation_words() {
        // content-type + continuation, then an empty continuation word.
        let p = BasicProperties::decode(Bytes::from_static(b"\x80\x01\x00\x00\x01x")).unwrap();
        assert_eq!(p.content_type, Some("x".into()));
        let e = BasicProperties::decode(Bytes::from_static(b"\x00\x01\x80\x00")).unwrap_err();
        assert_eq!(e, DecodeError::UnknownPropertyFlags(0x8000));
        let e = BasicProperties::decode(Bytes::from_static(b"\x00\x02")).unwrap_err();
        assert_eq!(e, DecodeError::UnknownPropertyFlags(2));
        let e = BasicProperties::decode(Bytes::from_static(b"\x80\x00\x05ab")).unwrap_err();
        assert_eq!(e, DecodeError::Truncated);
    }
}
