//! The hooks for the bridge to the other protocols: stanzas to bridge
//! domains come out as `Output::Bridge`, stanzas from them are routed in.

use super::super::persist::OFFLINE_TABLE;
use super::*;

fn bridged_hub() -> H {
    let mut config = HubConfig::new(DOMAIN);
    config.bridge_domains = vec!["bridge.localhost".into(), "topics.localhost".into()];
    H::with_config(config)
}

#[test]
fn messages_and_iqs_to_a_bridge_domain_go_to_the_bridge_with_from_stamped() {
    let mut h = bridged_hub();
    h.online(1, "alice", "a");
    let m = message("bridge.localhost/devices/kitchen/cmd", "", "on");
    let out = h.send(1, m.clone());
    check(
        &out,
        vec![Shape::Bridge(
            1,
            norm(&m.with_attr("from", full("alice", "a"))),
        )],
    );
    let q = iq("get", "q1", Some("topics.localhost"), None);
    let out = h.send(1, q.clone());
    check(
        &out,
        vec![Shape::Bridge(
            1,
            norm(&q.with_attr("from", full("alice", "a"))),
        )],
    );
    // Presence is not bridged, and without bridge domains the hub answers.
    assert!(h.send(1, presence_to("topics.localhost", "")).is_empty());
    let mut plain = H::new();
    plain.online(1, "alice", "a");
    let out = plain.send(1, message("bridge.localhost/x", "", "on"));
    assert!(
        matches!(out.as_slice(), [Output::Deliver { .. }]),
        "{out:?}"
    );
}

#[test]
fn bridge_messages_reach_online_users_or_are_stored() {
    let mut h = bridged_hub();
    let m = message(&bare("bob"), "", "21.5").with_attr("from", "topics.localhost");
    let mut out = Vec::new();
    assert!(
        h.hub
            .deliver_from_bridge(m.clone(), &accounts, NOW, &mut out)
    );
    assert!(
        matches!(out.as_slice(), [Output::Put { table, .. }] if *table == OFFLINE_TABLE),
        "{out:?}"
    );
    h.online(2, "bob", "b");
    let mut out = Vec::new();
    assert!(
        h.hub
            .deliver_from_bridge(m.clone(), &accounts, NOW, &mut out)
    );
    check(&out, vec![d(2, m)]);
}

#[test]
fn bridge_stanzas_need_a_bridge_sender_and_a_local_account() {
    let mut h = bridged_hub();
    h.online(2, "bob", "b");
    let mut out = Vec::new();
    let spoofed = message(&bare("bob"), "", "x").with_attr("from", "alice@localhost");
    assert!(!h.hub.deliver_from_bridge(spoofed, &accounts, NOW, &mut out));
    let nobody = message(&bare("zed"), "", "x").with_attr("from", "bridge.localhost");
    assert!(!h.hub.deliver_from_bridge(nobody, &accounts, NOW, &mut out));
    let remote = message("bob@example.org", "", "x").with_attr("from", "bridge.localhost");
    assert!(!h.hub.deliver_from_bridge(remote, &accounts, NOW, &mut out));
    assert!(out.is_empty(), "{out:?}");
    let reply =
        iq("result", "s1", Some(&full("bob", "b")), None).with_attr("from", "topics.localhost");
    assert!(
        h.hub
            .deliver_from_bridge(reply.clone(), &accounts, NOW, &mut out)
    );
    check(&out, vec![d(2, reply)]);
}
