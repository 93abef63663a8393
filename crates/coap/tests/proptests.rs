//! Property tests: any message round-trips; arbitrary bytes never panic the
//! decoder or the endpoint; block slicing and reassembly agree.

use bytes::Bytes;
use proptest::prelude::*;
use tributary_coap::message::to_bytes;
use tributary_coap::{Assembler, Code, Message, Progress, Type, block, decode};

fn message() -> impl Strategy<Value = Message> {
    (
        0u8..4,
        any::<u8>().prop_filter("not a reserved class", |c| !matches!(c >> 5, 1 | 6 | 7)),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..=8),
        proptest::collection::vec(
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..400)),
            0..12,
        ),
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(t, code, mid, token, mut options, payload)| {
            let mtype = [Type::Con, Type::Non, Type::Ack, Type::Rst][t as usize];
            let mut m = Message::new(mtype, Code(code), mid);
            if code != 0 {
                m.token = Bytes::from(token);
                options.sort_by_key(|o| o.0);
                for (n, v) in options {
                    m.add_option(n, Bytes::from(v));
                }
                m.payload = Bytes::from(payload);
            }
            m
        })
}

proptest! {
    #[test]
    fn messages_round_trip(m in message()) {
        prop_assert_eq!(decode(to_bytes(&m)), Ok(m));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        tributary_coap::fuzzing::message_target(&data);
    }

    #[test]
    fn blocks_reassemble(len in 0usize..5000, szx in 0u8..7) {
        let body = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
        let mut asm = Assembler::new(len);
        let mut num = 0;
        loop {
            let (chunk, b) = block::slice(&body, num, szx).expect("block in range");
            match asm.feed(b, &chunk).expect("in order") {
                Progress::Continue => num += 1,
                Progress::Complete(all) => { prop_assert_eq!(all, body); break; }
            }
        }
    }
}
