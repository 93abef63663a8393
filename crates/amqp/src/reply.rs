//! AMQP 0-9-1 reply codes, one line per code, with the specification's sentence as doc.

/// A reply code as carried by `connection.close`, `channel.close` and `basic.return`.
pub type ReplyCode = u16;

macro_rules! reply_codes {
    ($( $(#[doc = $doc:literal])* $name:ident = $value:literal, $kind:ident; )*) => {
        $( $(#[doc = $doc])* pub const $name: ReplyCode = $value; )*

        /// The spec's upper-case name of a code (`"NOT_FOUND"`), used as the prefix of reply texts.
        pub fn name(code: ReplyCode) -> Option<&'static str> {
            match code {
                $( $value => Some(stringify!($name)), )*
                _ => None,
            }
        }

        /// Whether a code is a hard error, i.e. closes the whole connection rather than a channel.
        pub fn is_hard_error(code: ReplyCode) -> bool {
            match code {
                $( $value => reply_codes!(@hard $kind), )*
                _ => true,
            }
        }
    };
    (@hard hard) => { true };
    (@hard soft) => { false };
    (@hard none) => { false };
}

reply_codes! {
    /// Indicates that the method completed successfully.
    REPLY_SUCCESS = 200, none;
    /// The client attempted to transfer content larger than the server could accept at the present time.
    CONTENT_TOO_LARGE = 311, soft;
    /// Returned by the server when a mandatory message cannot be routed to any queue.
    NO_ROUTE = 312, soft;
    /// When the exchange cannot deliver to a consumer when the immediate flag is set.
    NO_CONSUMERS = 313, soft;
    /// An operator intervened to close the connection for some reason.
    CONNECTION_FORCED = 320, hard;
    /// The client tried to work with an unknown virtual host.
    INVALID_PATH = 402, hard;
    /// The client attempted to work with a server entity to which it has no access due to security settings.
    ACCESS_REFUSED = 403, soft;
    /// The client attempted to work with a server entity that does not exist.
    NOT_FOUND = 404, soft;
    /// The client attempted to work with a server entity to which it has no access because another client is working with it.
    RESOURCE_LOCKED = 405, soft;
    /// The client requested a method that was not allowed because some precondition failed.
    PRECONDITION_FAILED = 406, soft;
    /// The sender sent a malformed frame that the recipient could not decode.
    FRAME_ERROR = 501, hard;
    /// The sender sent a frame that contained illegal values for one or more fields.
    SYNTAX_ERROR = 502, hard;
    /// The client sent an invalid sequence of frames, attempting to perform an operation that was considered invalid by the server.
    COMMAND_INVALID = 503, hard;
    /// The client attempted to work with a channel that had not been correctly opened.
    CHANNEL_ERROR = 504, hard;
    /// The peer sent a frame that was not expected, usually in the context of a content header and body.
    UNEXPECTED_FRAME = 505, hard;
    /// The server could not complete the method because it lacked sufficient resources.
    RESOURCE_ERROR = 506, hard;
    /// The client tried to work with some entity in a manner that is prohibited by the server, due to security settings or by some other criteria.
    NOT_ALLOWED = 530, hard;
    /// The client tried to use functionality that is not implemented in the server.
    NOT_IMPLEMENTED = 540, hard;
    /// The server could not complete the method because of an internal error.
    INTERNAL_ERROR = 541, hard;
}

/// Formats a reply text the way RabbitMQ does: `"NOT_FOUND - no queue 'q'"`, truncated to fit a
/// short string. A text that already starts with the code's name is left as it is.
pub fn reply_text(code: ReplyCode, text: &str) -> String {
    let mut s = match name(code) {
        Some(n) if !text.starts_with(n) => format!("{n} - {text}"),
        _ => text.to_owned(),
    };
    if s.len() > crate::shortstr::SHORTSTR_MAX {
        let mut end = crate::shortstr::SHORTSTR_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds() {
        assert_eq!(name(NOT_FOUND), Some("NOT_FOUND"));
        assert_eq!(name(999), None);
        assert!(is_hard_error(FRAME_ERROR));
        assert!(!is_hard_error(PRECONDITION_FAILED));
        assert_eq!(
            reply_text(NOT_ALLOWED, "vhost x not found"),
            "NOT_ALLOWED - vhost x not found"
        );
        assert_eq!(
            reply_text(NOT_ALLOWED, "NOT_ALLOWED - x"),
            "NOT_ALLOWED - x"
        );
        assert_eq!(reply_text(NOT_FOUND, &"x".repeat(300)).len(), 255);
    }
}
