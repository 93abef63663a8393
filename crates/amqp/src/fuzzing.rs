//! Harnesses shared by the cargo-fuzz targets and the stable corpus-replay test.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::PROTOCOL_HEADER;
use crate::connection::{Connection, ConnectionConfig, Event};
use crate::frame::{decode_frame, encode_method};
use crate::method::Method;
use crate::table::FieldTable;

/// `amqp_frame`: decode frames from `data` until it runs out or a fatal error, with a
/// frame_max taken from the first octet.
pub fn frame_target(data: &[u8]) {
    let (frame_max, data) = match data.split_first() {
        Some((b, rest)) => (if *b == 0 { 0 } else { 4096 * u32::from(*b) }, rest),
        None => return,
    };
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, frame_max) {
            Ok(Some(f)) => {
                // Re-encoding a decoded frame must decode to the same frame. Compared as
                // bytes: a float field holding NaN is never equal to itself.
                let mut out = BytesMut::new();
                f.encode(&mut out);
                let first = out.clone();
                let again = decode_frame(&mut out, 0)
                    .expect("re-encoded frame decodes")
                    .expect("a whole frame");
                let mut second = BytesMut::new();
                again.encode(&mut second);
                assert_eq!(first, second, "the frame does not survive a round trip");
            }
            Ok(None) => break,
            Err(e) if e.is_fatal() => break,
            Err(_) => {}
        }
        assert!(buf.len() < before, "decode_frame made no progress");
    }
}

/// A client's valid handshake up to an open channel 1: header, start-ok (PLAIN guest/guest),
/// tune-ok, open and channel.open.
pub fn handshake_prefix() -> BytesMut {
    let mut b = BytesMut::new();
    b.extend_from_slice(&PROTOCOL_HEADER);
    let start_ok = Method::ConnectionStartOk {
        client_properties: FieldTable::default(),
        mechanism: "PLAIN".into(),
        response: bytes::Bytes::from_static(b"\0guest\0guest"),
        locale: "en_US".into(),
    };
    encode_method(0, &start_ok, &mut b);
    let tune_ok = Method::ConnectionTuneOk {
        channel_max: 16,
        frame_max: 4096,
        heartbeat: 10,
    };
    encode_method(0, &tune_ok, &mut b);
    let open = Method::ConnectionOpen {
        virtual_host: "/".into(),
        capabilities: "".into(),
        insist: false,
    };
    encode_method(0, &open, &mut b);
    encode_method(
        1,
        &Method::ChannelOpen {
            out_of_band: "".into(),
        },
        &mut b,
    );
    b
}

/// `amqp_connection`: after a valid handshake, feed `data[2..]` to a connection in chunks whose
/// sizes derive from `data[0..2]`, accepting auth and vhost, advancing a fake clock.
pub fn connection_target(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let mut seed = u32::from(data[0]) << 8 | u32::from(data[1]) | 1;
    let data = &data[2..];
    let config = ConnectionConfig {
        channel_max: 16,
        frame_max: 4096,
        max_message_size: 64 * 1024,
        ..ConnectionConfig::default()
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut conn = Connection::new(config, now);
    let mut stream = handshake_prefix();
    stream.extend_from_slice(data);
    let mut input = BytesMut::new();
    let mut closed = false;
    let mut pos = 0;
    while pos < stream.len() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed % 64) as usize + 1;
        let end = (pos + n).min(stream.len());
        input.extend_from_slice(&stream[pos..end]);
        pos = end;
        if seed % 97 == 0 {
            now += Duration::from_secs(u64::from(seed % 40));
            conn.handle_timeout(now);
        }
        conn.handle_input(&mut input, now);
        assert!(
            input.len() <= 4096 + 8,
            "connection kept more than a frame of input"
        );
        while let Some(ev) = conn.poll_event() {
            assert!(!closed, "event after Closed: {ev:?}");
            match ev {
                Event::Authenticate { .. } => conn.accept_auth(),
                // SCRAM rounds: a challenge per response until the bound, then success.
                Event::AuthStep { round, .. } if round < 2 => {
                    conn.auth_challenge(b"r=x,s=eA==,i=1")
                }
                Event::AuthStep { .. } => conn.accept_auth_with_data("fuzz", b"v=eA=="),
                Event::Open { .. } => conn.accept_open(),
                Event::Closed { .. } => closed = true,
                Event::Method {
                    channel,
                    method: Method::QueueDeclare { .. },
                } => conn.close_channel(channel, 406, "PRECONDITION_FAILED - test", 50, 10),
                _ => {}
            }
        }
        conn.transmit().clear();
        if let Some(t) = conn.poll_timeout() {
            assert!(t >= t0);
        }
    }
    assert_eq!(closed, conn.is_closed());
}
