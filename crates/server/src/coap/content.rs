//! CoAP Content-Format numbers (RFC 7252 §12.3 registry) and the content
//! types they carry into the core's `content_type`.

/// (number, content type) pairs we map; any other number is 4.15.
const FORMATS: &[(u32, &str)] = &[
    (0, "text/plain;charset=utf-8"),
    (40, "application/link-format"),
    (41, "application/xml"),
    (42, "application/octet-stream"),
    (47, "application/exi"),
    (50, "application/json"),
    (60, "application/cbor"),
    (110, "application/senml+json"),
    (112, "application/senml+cbor"),
];

/// The content type of a Content-Format, if known.
pub fn content_type(format: u32) -> Option<&'static str> {
    FORMATS.iter().find(|(n, _)| *n == format).map(|(_, t)| *t)
}

/// The Content-Format of a content type, if it has one (`text/plain`
/// without parameters counts as format 0).
pub fn format_of(content_type: &str) -> Option<u32> {
    let t = content_type.trim();
    if t.eq_ignore_ascii_case("text/plain") {
        return Some(0);
    }
    FORMATS
        .iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(t))
        .map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_map_both_ways() {
        assert_eq!(content_type(50), Some("application/json"));
        assert_eq!(format_of("application/json"), Some(50));
        assert_eq!(format_of("text/plain"), Some(0));
        assert_eq!(content_type(9999), None);
        assert_eq!(format_of("image/png"), None);
    }
}
