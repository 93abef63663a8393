//! Offline messages (XEP-0160) with delayed-delivery stamps (XEP-0203).

use jid::BareJid;
use tributary_xmpp_xml::Element;

use super::persist::{OFFLINE_TABLE, offline_key, offline_value};
use super::sessions::deliver;
use super::{Hub, Output, SessionId, StanzaError};
use crate::ns;

/// Chat state notifications (XEP-0085): alone they are not worth storing.
const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// Whether a message is worth keeping for later: not `<no-store/>`
/// (XEP-0334), and carrying something besides chat states, hints and a thread.
fn worth_storing(message: &Element) -> bool {
    if message.child("no-store", ns::HINTS).is_some() {
        return false;
    }
    message
        .elements()
        .any(|e| e.ns != CHATSTATES && e.ns != ns::HINTS && !e.is("thread", ns::CLIENT))
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` (XEP-0082) for a Unix time in milliseconds.
pub(super) fn timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

impl Hub {
    /// Stores a message for `bare`: `Ok(true)` stored, `Ok(false)` not worth
    /// storing (dropped), `Err` when the user's storage is full.
    pub(super) fn store_offline(
        &mut self,
        bare: &BareJid,
        mut message: Element,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Result<bool, StanzaError> {
        if !worth_storing(&message) {
            return Ok(false);
        }
        let count = self.offline.get(bare).map_or(0, |m| m.len());
        if count >= self.config.max_offline_per_user {
            return Err(StanzaError::service_unavailable().with_text("offline storage is full"));
        }
        let stamped = message
            .elements()
            .any(|e| e.is("delay", ns::DELAY) && e.attr("from") == Some(self.domain.as_str()));
        if !stamped {
            message.push_child(
                Element::new("delay", ns::DELAY)
                    .with_attr("from", self.domain.clone())
                    .with_attr("stamp", timestamp(now)),
            );
        }
        let seq = self.next_offline_seq;
        self.next_offline_seq += 1;
        out.push(Output::Put {
            table: OFFLINE_TABLE,
            key: offline_key(bare, seq),
            value: offline_value(&message),
        });
        self.offline
            .entry(bare.clone())
            .or_default()
            .insert(seq, message);
        Ok(true)
    }

    /// Delivers the stored messages to `session`, oldest first, then deletes them.
    pub(super) fn flush_offline(
        &mut self,
        session: SessionId,
        bare: &BareJid,
        out: &mut Vec<Output>,
    ) {
        let Some(messages) = self.offline.remove(bare) else {
            return;
        };
        let keys: Vec<u64> = messages.keys().copied().collect();
        for (_, m) in messages {
            deliver(out, session, m);
        }
        for seq in keys {
            out.push(Output::Delete {
                table: OFFLINE_TABLE,
                key: offline_key(bare, seq),
            });
        }
    }
}
