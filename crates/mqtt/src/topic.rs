//! Topic names and filters (MQTT 5.0 section 4.7, 3.1.1 section 4.7), shared subscriptions
//! (MQTT 5.0 section 4.8.2), and the mapping onto AMQP topic-exchange routing keys.
//!
//! ## MQTT ↔ AMQP, the RabbitMQ way
//!
//! An MQTT subscription is a queue bound to a topic exchange, so topics become routing keys as
//! RabbitMQ's MQTT plugin makes them (`rabbit_mqtt_util:to_amqp/1`, `to_mqtt/1`):
//!
//! | MQTT | AMQP | meaning |
//! | --- | --- | --- |
//! | `/` | `.` | level separator |
//! | `+` | `*` | exactly one level |
//! | `#` | `#` | any number of levels |
//!
//! RabbitMQ does not escape a `.` inside an MQTT level: `v1.2/data` becomes `v1.2.data`, three
//! words, and comes back as `v1/2/data`. We do the same so that AMQP bindings written for
//! RabbitMQ keep matching; [`RoutingKeyMapping::sparkplug`] reproduces the plugin's
//! `mqtt.sparkplug` option, which turns the `.` of a Sparkplug namespace (`spBv1.0/...`) into
//! `___` and back. Two deliberate differences: [`routing_key_to_topic`] leaves a `*` of a
//! message's routing key alone (RabbitMQ turns it into `+`, which no MQTT client accepts in a
//! topic name), and `*` only becomes `+` in [`binding_key_to_filter`]. Leading wildcards not
//! matching `$`-topics is the router's business, not this mapping's.

/// Why a string is not a valid Topic Name or Topic Filter.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero length ("All Topic Names and Topic Filters MUST be at least one character long").
    #[error("empty")]
    Empty,
    /// Longer than the 65,535 bytes of a UTF-8 Encoded String.
    #[error("longer than 65535 bytes")]
    TooLong,
    /// Contains U+0000.
    #[error("contains U+0000")]
    NullCharacter,
    /// A wildcard in a Topic Name ("The wildcard characters ... MUST NOT be used within a Topic
    /// Name").
    #[error("wildcard in a topic name")]
    WildcardInName,
    /// `+` sharing a level with other characters ("Where it is used, it MUST occupy an entire
    /// level of the filter").
    #[error("'+' does not occupy an entire level")]
    SingleLevelWildcard,
    /// `#` not alone in the last level ("The multi-level wildcard character MUST be specified
    /// either on its own or following a topic level separator. In either case it MUST be the
    /// last character specified in the Topic Filter").
    #[error("'#' is not alone in the last level")]
    MultiLevelWildcard,
    /// `$share/` without a valid ShareName and Topic Filter ("A Shared Subscription's Topic
    /// Filter MUST start with $share/ and MUST contain a ShareName that is at least one
    /// character long"; "The ShareName MUST NOT contain the characters "/", "+" or "#", but MUST
    /// be followed by a "/" character. This "/" character MUST be followed by a Topic Filter").
    #[error("invalid shared subscription")]
    InvalidShare,
}

fn common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a Topic Name (PUBLISH, will, Response Topic): non-empty, no wildcards.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    common(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a Topic Filter (SUBSCRIBE, UNSUBSCRIBE): non-empty, `+` a whole level, `#` alone in
/// the last level; a `$share/{group}/{filter}` must also be a valid shared subscription.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    let inner = match parse_shared(filter)? {
        Some(shared) => shared.filter,
        None => filter,
    };
    validate_plain_filter(inner)
}

fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelWildcard);
        }
    }
    Ok(())
}

/// A shared subscription `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The ShareName.
    pub group: &'a str,
    /// The Topic Filter after the ShareName.
    pub filter: &'a str,
}

/// The prefix of a shared subscription's filter.
pub const SHARE_PREFIX: &str = "$share/";

/// Splits a `$share/{group}/{filter}` filter; `Ok(None)` for a filter that is not shared. The
/// inner filter is returned as is: [`validate_topic_filter`] checks it.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(TopicError::InvalidShare);
    };
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(TopicError::InvalidShare);
    }
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

/// Whether a topic name starts with `$` (`$SYS/...`): leading wildcards do not match it.
pub fn is_dollar_topic(name: &str) -> bool {
    name.starts_with('$')
}

/// The options of the MQTT ↔ AMQP routing-key mapping; `Default` is RabbitMQ's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutingKeyMapping {
    /// RabbitMQ's `mqtt.sparkplug`: in a topic starting `spAvN.M/` or `spBvN.M/`, the `.` of the
    /// namespace becomes `___` (and back), so that it stays one AMQP word.
    pub sparkplug: bool,
}

impl RoutingKeyMapping {
    /// An MQTT Topic Name as an AMQP routing key.
    pub fn topic_to_routing_key(self, topic: &str) -> String {
        self.to_amqp(topic, false)
    }

    /// An MQTT Topic Filter as an AMQP binding key (`+` → `*`).
    pub fn filter_to_routing_key(self, filter: &str) -> String {
        self.to_amqp(filter, true)
    }

    /// An AMQP routing key as an MQTT Topic Name (`.` → `/`; `*` stays).
    pub fn routing_key_to_topic(self, key: &str) -> String {
        self.to_mqtt(key, false)
    }

    /// An AMQP binding key as an MQTT Topic Filter (`.` → `/`, `*` → `+`).
    pub fn binding_key_to_filter(self, key: &str) -> String {
        self.to_mqtt(key, true)
    }

    fn to_amqp(self, s: &str, filter: bool) -> String {
        let (prefix, rest) = match self
            .sparkplug
            .then(|| sparkplug_mqtt_namespace(s))
            .flatten()
        {
            Some(n) => (s[..n].replacen('.', "___", 1), &s[n..]),
            None => (String::new(), s),
        };
        let mut out = prefix;
        map_ascii(&mut out, rest, |b| match b {
            b'/' => Some('.'),
            b'+' if filter => Some('*'),
            _ => None,
        });
        out
    }

    fn to_mqtt(self, s: &str, filter: bool) -> String {
        let (mut out, rest) = match self
            .sparkplug
            .then(|| sparkplug_amqp_namespace(s))
            .flatten()
        {
            Some(n) => (s[..n].replacen("___", ".", 1), &s[n..]),
            None => (String::new(), s),
        };
        map_ascii(&mut out, rest, |b| match b {
            b'.' => Some('/'),
            b'*' if filter => Some('+'),
            _ => None,
        });
        out
    }
}

/// Appends `s` to `out` with the ASCII bytes `map` names replaced: a byte
/// scan and one copy per run of unchanged bytes (a topic is mapped for every
/// message published and delivered). ASCII bytes never occur inside a
/// multi-byte UTF-8 sequence, so every replaced byte is a whole character.
fn map_ascii(out: &mut String, s: &str, map: impl Fn(u8) -> Option<char>) {
    out.reserve(s.len());
    let mut copied = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(c) = map(b) {
            out.push_str(&s[copied..i]);
            out.push(c);
            copied = i + 1;
        }
    }
    out.push_str(&s[copied..]);
}

/// Length of a leading `sp[AB]v<digits>.<digits>` (RabbitMQ's `^sp[AB]v\d+\.\d+/`), up to but
/// not including the `/`.
fn sparkplug_mqtt_namespace(s: &str) -> Option<usize> {
    sparkplug_namespace(s, ".", b'/')
}

/// Length of a leading `sp[AB]v<digits>___<digits>` followed by `.`.
fn sparkplug_amqp_namespace(s: &str) -> Option<usize> {
    sparkplug_namespace(s, "___", b'.')
}

fn sparkplug_namespace(s: &str, sep: &str, end: u8) -> Option<usize> {
    let b = s.as_bytes();
    if !(s.starts_with("spAv") || s.starts_with("spBv")) {
        return None;
    }
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = 4;
    let d = digits(i);
    if d == 0 {
        return None;
    }
    i += d;
    if !s[i..].starts_with(sep) {
        return None;
    }
    i += sep.len();
    let d = digits(i);
    if d == 0 {
        return None;
    }
    i += d;
    (b.get(i) == Some(&end)).then_some(i)
}

/// [`RoutingKeyMapping::topic_to_routing_key`] with RabbitMQ's defaults: `a/b/c` → `a.b.c`.
pub fn topic_to_routing_key(topic: &str) -> String {
    RoutingKeyMapping::default().topic_to_routing_key(topic)
}

/// [`RoutingKeyMapping::filter_to_routing_key`] with RabbitMQ's defaults: `a/+/#` → `a.*.#`.
pub fn filter_to_routing_key(filter: &str) -> String {
    RoutingKeyMapping::default().filter_to_routing_key(filter)
}

/// [`RoutingKeyMapping::routing_key_to_topic`] with RabbitMQ's defaults: `a.b.c` → `a/b/c`.
pub fn routing_key_to_topic(key: &str) -> String {
    RoutingKeyMapping::default().routing_key_to_topic(key)
}

/// [`RoutingKeyMapping::binding_key_to_filter`] with RabbitMQ's defaults: `a.*.#` → `a/+/#`.
pub fn binding_key_to_filter(key: &str) -> String {
    RoutingKeyMapping::default().binding_key_to_filter(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_keeps_multibyte_characters() {
        assert_eq!(topic_to_routing_key("süd/€/x"), "süd.€.x");
        assert_eq!(filter_to_routing_key("ü/+/€/#"), "ü.*.€.#");
        assert_eq!(routing_key_to_topic("ü.€.*"), "ü/€/*");
        assert_eq!(topic_to_routing_key(""), "");
        assert_eq!(topic_to_routing_key("//"), "..");
    }

    #[test]
    fn topic_names() {
        for ok in ["a", "/", "a/b/c", "a//c", "$SYS/broker/uptime", " ", "ü/€"] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a#b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0"), Err(TopicError::NullCharacter));
        assert_eq!(
            validate_topic_name(&"a".repeat(65_536)),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "+/+",
            "/+",
            "a/#",
            "a/+/c",
            "+/tennis/#",
            "sport/+",
            "a//#",
            "$SYS/#",
            "$share/g/a/+",
            "$share/g/#",
            "$share",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        for (bad, e) in [
            ("", TopicError::Empty),
            ("a#", TopicError::MultiLevelWildcard),
            ("a/#/b", TopicError::MultiLevelWildcard),
            ("#/", TopicError::MultiLevelWildcard),
            ("a/b#", TopicError::MultiLevelWildcard),
            ("a+", TopicError::SingleLevelWildcard),
            ("a/+b/c", TopicError::SingleLevelWildcard),
            ("$share/g", TopicError::InvalidShare),
            ("$share//a", TopicError::InvalidShare),
            ("$share/g/", TopicError::InvalidShare),
            ("$share/g+/a", TopicError::InvalidShare),
            ("$share/#/a", TopicError::InvalidShare),
            ("$share/g/a#", TopicError::MultiLevelWildcard),
        ] {
            assert_eq!(validate_topic_filter(bad), Err(e), "{bad}");
        }
    }

    #[test]
    fn shared() {
        assert_eq!(
            parse_shared("$share/consumers/sensors/+/temp"),
            Ok(Some(SharedFilter {
                group: "consumers",
                filter: "sensors/+/temp"
            }))
        );
        assert_eq!(parse_shared("sensors/#"), Ok(None));
        assert_eq!(parse_shared("$share/g"), Err(TopicError::InvalidShare));
    }

    #[test]
    fn routing_keys_like_rabbitmq() {
        assert_eq!(topic_to_routing_key("a/b/c"), "a.b.c");
        assert_eq!(topic_to_routing_key("/a/"), ".a.");
        assert_eq!(topic_to_routing_key("v1.2/data"), "v1.2.data");
        assert_eq!(filter_to_routing_key("a/+/#"), "a.*.#");
        assert_eq!(filter_to_routing_key("+"), "*");
        assert_eq!(filter_to_routing_key("#"), "#");
        assert_eq!(routing_key_to_topic("a.b.c"), "a/b/c");
        assert_eq!(routing_key_to_topic("a.*"), "a/*");
        assert_eq!(binding_key_to_filter("a.*.#"), "a/+/#");
        assert_eq!(binding_key_to_filter("v1.2.data"), "v1/2/data");
    }

    #[test]
    fn sparkplug() {
        let m = RoutingKeyMapping { sparkplug: true };
        assert_eq!(
            m.topic_to_routing_key("spBv1.0/group/NBIRTH/edge"),
            "spBv1___0.group.NBIRTH.edge"
        );
        assert_eq!(
            m.routing_key_to_topic("spBv1___0.group.NBIRTH.edge"),
            "spBv1.0/group/NBIRTH/edge"
        );
        assert_eq!(m.filter_to_routing_key("spAv1.0/+/#"), "spAv1___0.*.#");
        assert_eq!(m.binding_key_to_filter("spAv1___0.*.#"), "spAv1.0/+/#");
        // Not a namespace: plain mapping.
        assert_eq!(m.topic_to_routing_key("spBv1.x/a"), "spBv1.x.a");
        assert_eq!(m.routing_key_to_topic("spBv1___0"), "spBv1___0");
    }

    #[test]
    fn round_trip_without_dots() {
        for t in ["a/b/c", "/", "a//b", "$SYS/x", "x"] {
            assert_eq!(routing_key_to_topic(&topic_to_routing_key(t)), t);
        }
        for f in ["a/+/#", "+/+", "#"] {
            assert_eq!(binding_key_to_filter(&filter_to_routing_key(f)), f);
        }
    }
}
