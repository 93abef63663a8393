//! AMQP short strings: at most 255 octets, kept as zero-copy [`Bytes`] slices.

use std::fmt;

use bytes::Bytes;

/// Longest short string the wire format can carry (its length is one octet).
pub const SHORTSTR_MAX: usize = 255;

/// An AMQP `shortstr`: up to 255 octets, usually (but not necessarily) UTF-8.
///
/// Decoded short strings are slices of the frame they came from, so names and routing keys
/// cost no allocation. Constructors from longer input truncate to 255 octets (at a character
/// boundary for `str` input), so the type can always be encoded.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ShortStr(Bytes);

impl ShortStr {
    /// Wraps a static string without copying; panics if it is longer than 255 octets.
    pub const fn from_static(s: &'static str) -> Self {
        assert!(
            s.len() <= SHORTSTR_MAX,
            "short string longer than 255 octets"
        );
        ShortStr(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps raw octets (a zero-copy slice), truncating to 255 octets.
    pub fn from_bytes(mut b: Bytes) -> Self {
        b.truncate(SHORTSTR_MAX);
        ShortStr(b)
    }

    /// The raw octets, for protocol code that must not assume UTF-8.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The string as UTF-8, or `None` when the peer sent other bytes.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in octets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty (AMQP's default exchange, server-named queues...).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Gives the underlying shared buffer back, for storage without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

fn truncate_str(s: &str) -> &str {
    if s.len() <= SHORTSTR_MAX {
        return s;
    }
    let mut end = SHORTSTR_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        ShortStr(Bytes::copy_from_slice(truncate_str(s).as_bytes()))
    }
}

impl From<String> for ShortStr {
    fn from(mut s: String) -> Self {
        let n = truncate_str(&s).len();
        s.truncate(n);
        ShortStr(Bytes::from(s))
    }
}

impl AsRef<[u8]> for ShortStr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => write!(f, "ShortStr({:?})", self.0),
        }
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_char_boundary() {
        let long = "é".repeat(200); // 400 octets
        let s = ShortStr::from(long.as_str());
        assert_eq!(s.len(), 254);
        assert!(s.as_str().is_some());
        let s = ShortStr::from(long);
        assert_eq!(s.len(), 254);
    }

    #[test]
    fn non_utf8_is_kept() {
        let s = ShortStr::from_bytes(Bytes::from_static(b"\xff\xfe"));
        assert_eq!(s.as_str(), None);
        assert_eq!(s.as_bytes(), b"\xff\xfe");
        assert_eq!(format!("{s:?}"), "ShortStr(b\"\\xff\\xfe\")");
    }

    #[test]
    fn basics() {
        let s = ShortStr::from_static("amq.direct");
        assert_eq!(s, "amq.direct");
        assert_eq!(s.len(), 10);
        assert!(!s.is_empty());
        assert!(ShortStr::default().is_empty());
        assert_eq!(s.clone().into_bytes(), Bytes::from_static(b"amq.direct"));
    }
}
