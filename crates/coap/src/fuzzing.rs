//! Harness shared by the cargo-fuzz target and the stable corpus-replay test.

use crate::{Endpoint, EndpointConfig, Event, Message, decode, message::to_bytes};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// `coap_message`: decoding arbitrary bytes never panics, a decoded message
/// re-encodes to a message that decodes to the same value, and an endpoint
/// fed the input (split into datagrams at each 0xFE byte) never
/// panics and answers every request it reports.
pub fn message_target(data: &[u8]) {
    if let Ok(m) = decode(Bytes::copy_from_slice(data)) {
        let again = decode(to_bytes(&m)).expect("re-encoded message decodes");
        assert_eq!(again, m);
    }
    let t0 = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 42);
    for (i, datagram) in data.split(|&b| b == 0xfe).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 700);
        let _ = e.handle_datagram(Bytes::copy_from_slice(datagram), now);
        e.handle_timeout(now);
        while let Some(ev) = e.poll_event() {
            if let Event::Request(req) = ev {
                let resp = Message::new(crate::Type::Ack, crate::Code::NOT_FOUND, 0);
                e.respond(&req, resp);
                e.send(Message::new(crate::Type::Con, crate::Code::CONTENT, 0), now);
            }
        }
        while e.poll_transmit().is_some() {}
    }
}
