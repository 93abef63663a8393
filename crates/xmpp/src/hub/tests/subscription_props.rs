//! Property test: random subscription traffic between three users never
//! panics, keeps both halves of every subscription consistent, and
//! survives a restart from the written rows.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tributary_xmpp_xml::Element;

use super::*;

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const KINDS: [&str; 5] = [
    "subscribe",
    "subscribed",
    "unsubscribe",
    "unsubscribed",
    "probe",
];

#[derive(Debug, Clone)]
enum Op {
    Presence { from: usize, to: usize, kind: usize },
    Add { from: usize, to: usize },
    Remove { from: usize, to: usize },
    Block { from: usize, to: usize },
    Unblock { from: usize, to: usize },
    Online(usize),
    Offline(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let pair = (0..3usize, 0..3usize);
    prop_oneof![
        6 => (pair.clone(), 0..KINDS.len()).prop_map(|((from, to), kind)| Op::Presence { from, to, kind }),
        1 => pair.clone().prop_map(|(from, to)| Op::Add { from, to }),
        1 => pair.clone().prop_map(|(from, to)| Op::Remove { from, to }),
        1 => pair.clone().prop_map(|(from, to)| Op::Block { from, to }),
        1 => pair.prop_map(|(from, to)| Op::Unblock { from, to }),
        1 => (0..3usize).prop_map(Op::Online),
        1 => (0..3usize).prop_map(Op::Offline),
    ]
}

fn roster_item_set(jid: &str, remove: bool) -> Element {
    let mut item = Element::new("item", ns::ROSTER).with_attr("jid", jid);
    if remove {
        item.set_attr("subscription", "remove");
    }
    iq(
        "set",
        "x",
        None,
        Some(Element::new("query", ns::ROSTER).with_child(item)),
    )
}

fn blocking(cmd: &str, jid: &str) -> Element {
    let payload = Element::new(cmd, ns::BLOCKING)
        .with_child(Element::new("item", ns::BLOCKING).with_attr("jid", jid));
    iq("set", "b", None, Some(payload))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_subscription_traffic_keeps_rosters_consistent(ops in prop::collection::vec(op(), 0..80)) {
        let mut h = H::new();
        let mut store = BTreeMap::new();
        let mut online = [false; 3];
        // A fourth, always-online session per user to send from.
        for (i, u) in USERS.iter().enumerate() {
            h.bind(10 + i as u64, u, "ctl");
        }
        for op in ops {
            let out = match op {
                Op::Presence { from, to, kind } => {
                    h.send(10 + from as u64, presence_to(&bare(USERS[to]), KINDS[kind]))
                }
                Op::Add { from, to } => h.send(10 + from as u64, roster_item_set(&bare(USERS[to]), false)),
                Op::Remove { from, to } => h.send(10 + from as u64, roster_item_set(&bare(USERS[to]), true)),
                Op::Block { from, to } => h.send(10 + from as u64, blocking("block", &bare(USERS[to]))),
                Op::Unblock { from, to } => h.send(10 + from as u64, blocking("unblock", &bare(USERS[to]))),
                Op::Online(u) if !online[u] => {
                    online[u] = true;
                    h.bind(u as u64 + 1, USERS[u], "r");
                    h.send(u as u64 + 1, roster_get("r"));
                    h.send(u as u64 + 1, presence())
                }
                Op::Offline(u) if online[u] => {
                    online[u] = false;
                    h.unbind(u as u64 + 1)
                }
                _ => Vec::new(),
            };
            apply(&mut store, &out);
            for a in USERS {
                for b in USERS {
                    if a == b {
                        continue;
                    }
                    let (sub_ab, ask_ab, pending_ab, _) = h.state(a, b);
                    let (sub_ba, _, _, _) = h.state(b, a);
                    prop_assert_eq!(sub_ab.has_to(), sub_ba.has_from(), "{} to {} vs {} from {}", a, b, b, a);
                    prop_assert!(!(ask_ab && sub_ab.has_to()), "{} asks {} while subscribed", a, b);
                    prop_assert!(!(pending_ab && sub_ab.has_from()), "{} has {} pending while approved", a, b);
                }
            }
        }
        let restored = restart(&store);
        let non_empty = |h: &H| -> Vec<(String, super::super::roster::Roster)> {
            let mut v: Vec<_> = h.hub.rosters.iter()
                .filter(|(_, r)| **r != super::super::roster::Roster::default())
                .map(|(k, r)| (k.to_string(), r.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        prop_assert_eq!(non_empty(&restored), non_empty(&h));
        prop_assert_eq!(&restored.hub.blocklists, &h.hub.blocklists);
    }
}
