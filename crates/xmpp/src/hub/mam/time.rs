//! Parsing XEP-0082 date-times (`start`, `end`, `since`) into Unix ms.

/// Parses `YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)` into Unix
/// milliseconds; `None` when malformed or before 1970.
pub(in crate::hub) fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = ms.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest.get(1..)?;
            if o.len() != 5 || o.as_bytes()[2] != b':' {
                return None;
            }
            let oh: i64 = o.get(0..2)?.parse().ok()?;
            let om: i64 = o.get(3..5)?.parse().ok()?;
            sign * (oh * 60 + om)
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_stamp;
    use crate::hub::offline::timestamp;

    #[test]
    fn round_trips_and_offsets() {
        for ms in [0, 1_704_164_645_678, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_stamp(&timestamp(ms)), Some(ms));
        }
        assert_eq!(parse_stamp("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_stamp("1970-01-01T00:00:00-00:30"), Some(1_800_000));
        assert_eq!(
            parse_stamp("2024-01-02T03:04:05.6Z"),
            Some(1_704_164_645_600)
        );
        assert_eq!(
            parse_stamp("2024-01-02T03:04:05.123456Z"),
            Some(1_704_164_645_123)
        );
        for bad in [
            "",
            "2024-01-02",
            "2024-13-02T03:04:05Z",
            "2024-01-02T03:04:05",
            "x024-01-02T03:04:05Z",
            "1969-12-31T23:59:59Z",
            "2024-01-02T03:04:05.Z",
        ] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }
}
