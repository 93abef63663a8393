//! Observe (RFC 7641): registration values and notification sequence numbers.

/// What a GET's Observe option asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObserveRequest {
    /// 0: add the client to the list of observers.
    Register,
    /// 1: remove it.
    Deregister,
}

impl ObserveRequest {
    /// The request an Observe value makes; other values are ignored (plain GET).
    pub fn from_value(v: u32) -> Option<Self> {
        match v {
            0 => Some(ObserveRequest::Register),
            1 => Some(ObserveRequest::Deregister),
            _ => None,
        }
    }
}

/// The 24-bit sequence number of one observation's notifications
/// (RFC 7641 §4.4): strictly increasing modulo 2^24.
#[derive(Debug, Clone, Default)]
pub struct ObserveSequence(u32);

impl ObserveSequence {
    /// A sequence starting at `first` (masked to 24 bits).
    pub fn starting_at(first: u32) -> Self {
        ObserveSequence(first & 0xff_ffff)
    }

    /// The value for the next notification.
    pub fn next_value(&mut self) -> u32 {
        let v = self.0;
        self.0 = (self.0 + 1) & 0xff_ffff;
        v
    }

    /// Whether `v2` is fresher than `v1` received `elapsed_secs` earlier,
    /// the client's rule of RFC 7641 §3.4.
    pub fn is_fresher(v1: u32, v2: u32, elapsed_secs: u64) -> bool {
        (v1 < v2 && v2 - v1 < 1 << 23) || (v1 > v2 && v1 - v2 > 1 << 23) || elapsed_secs > 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_wraps_at_24_bits_and_stays_fresh() {
        let mut s = ObserveSequence::starting_at(0xff_fffe);
        let a = s.next_value();
        let b = s.next_value();
        let c = s.next_value();
        assert_eq!((a, b, c), (0xff_fffe, 0xff_ffff, 0));
        assert!(ObserveSequence::is_fresher(a, b, 0));
        assert!(ObserveSequence::is_fresher(b, c, 0));
        assert!(!ObserveSequence::is_fresher(c, b, 0));
        assert_eq!(
            ObserveRequest::from_value(1),
            Some(ObserveRequest::Deregister)
        );
        assert_eq!(ObserveRequest::from_value(7), None);
    }
}
