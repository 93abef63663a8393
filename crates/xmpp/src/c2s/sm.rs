//! Stream management (XEP-0198) counters and the queue of stanzas the
//! client has not acknowledged yet, which a resumed stream re-sends.

use std::collections::VecDeque;
use tributary_xmpp_xml::Element;

/// Upper bound on stanzas kept for a client that never acknowledges: past
/// it the stream is closed, so one client cannot hold unbounded memory.
pub const MAX_UNACKED: usize = 10_000;

/// How many stanzas may go unacknowledged before the server asks for an ack.
const REQUEST_EVERY: u32 = 5;

/// Stream-management state of one session; it outlives a dropped TCP
/// connection when the session is resumable.
#[derive(Debug, Clone, Default)]
pub struct SmState {
    /// Resumption id handed out in `<enabled/>`, if resumable.
    pub id: Option<String>,
    /// Stanzas received from the client (the `h` we report).
    pub inbound: u32,
    /// Stanzas sent to the client.
    pub outbound: u32,
    /// Stanzas sent and not yet acknowledged, oldest first.
    pub unacked: VecDeque<Element>,
    /// `outbound` count when we last sent `<r/>`.
    requested_at: Option<u32>,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckTooHigh;

impl SmState {
    /// Fresh state after `<enable/>`.
    pub fn new(id: Option<String>) -> Self {
        SmState {
            id,
            ..SmState::default()
        }
    }

    /// Records a stanza sent to the client.
    pub fn sent(&mut self, stanza: Element) {
        self.outbound = self.outbound.wrapping_add(1);
        self.unacked.push_back(stanza);
    }

    /// Applies the client's `h`: drops what it has acknowledged.
    pub fn acknowledge(&mut self, h: u32) -> Result<(), AckTooHigh> {
        let acked_before = self.outbound.wrapping_sub(self.unacked.len() as u32);
        let newly = h.wrapping_sub(acked_before);
        if newly as usize > self.unacked.len() {
            return Err(AckTooHigh);
        }
        self.unacked.drain(..newly as usize);
        if self.unacked.is_empty() {
            self.requested_at = None;
        }
        Ok(())
    }

    /// Whether to send `<r/>` now.
    pub fn should_request(&mut self) -> bool {
        if self.unacked.is_empty() {
            return false;
        }
        let due = match self.requested_at {
            None => true,
            Some(at) => self.outbound.wrapping_sub(at) >= REQUEST_EVERY,
        };
        if due {
            self.requested_at = Some(self.outbound);
        }
        due
    }

    /// Takes the unacknowledged stanzas (the session ends for good).
    pub fn take_unacked(&mut self) -> Vec<Element> {
        self.unacked.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Element {
        Element::new("message", "jabber:client")
    }

    #[test]
    fn acknowledgement_drops_acked_stanzas() {
        let mut sm = SmState::new(None);
        for _ in 0..3 {
            sm.sent(msg());
        }
        sm.acknowledge(2).expect("valid h");
        assert_eq!(sm.unacked.len(), 1);
        sm.acknowledge(2).expect("repeat is fine");
        assert_eq!(sm.unacked.len(), 1);
        assert_eq!(sm.acknowledge(4), Err(AckTooHigh));
        sm.acknowledge(3).expect("all");
        assert!(sm.unacked.is_empty());
    }

    #[test]
    fn requests_are_spaced() {
        let mut sm = SmState::new(None);
        assert!(!sm.should_request());
        sm.sent(msg());
        assert!(sm.should_request());
        sm.sent(msg());
        assert!(!sm.should_request());
        for _ in 0..5 {
            sm.sent(msg());
        }
        assert!(sm.should_request());
    }
}
