"""Client State Indication (XEP-0352) with a raw client: while a client says it is inactive,
presence updates are held back (only the latest per contact), and they arrive when it becomes
active again or when a message comes, before the message."""

from __future__ import annotations

from xmpp_support import (DOMAIN, NS_CLIENT, RawXmpp, add_users, is_msg, q,  # noqa: F401
                          skip_unless_tributary, xb, xmpp_factory)

pytestmark = skip_unless_tributary

NS_CSI = "urn:xmpp:csi:0"


def subscribe_both(a: RawXmpp, b: RawXmpp):
    """a and b subscribe to each other's presence (pre-approved both ways)."""
    for x, y in ((a, b), (b, a)):
        x.send(f"<presence to='{y.jid.split('/')[0]}' type='subscribed'/>")
        x.send(f"<presence to='{y.jid.split('/')[0]}' type='subscribe'/>")
    for x in (a, b):
        x.send("<presence/>")


def settle(a: RawXmpp, b: RawXmpp):
    """Waits until everything the subscription handshake sent alice has arrived (a ping from
    bob to alice comes after it), then forgets it."""
    b.send(f"<iq type='get' id='settle' to='{a.jid}'><ping xmlns='urn:xmpp:ping'/></iq>")
    a.wait_for(lambda e: e.get("id") == "settle", "the settle ping")
    a.backlog.clear()


def presence_from(jid: str, show: str | None = None):
    def match(el):
        if el.tag != q(NS_CLIENT, "presence") or el.get("from") != jid or el.get("type"):
            return False
        return show is None or el.findtext(q(NS_CLIENT, "show")) == show
    return match


def test_inactive_client_gets_presence_late_and_only_the_latest(xb):
    pw = add_users(xb, "alice", "bob")
    with RawXmpp(xb.xmpp_port) as a, RawXmpp(xb.xmpp_port) as b:
        a.login("alice", pw["alice"], "a")
        b.login("bob", pw["bob"], "b")
        subscribe_both(a, b)
        a.wait_for(presence_from(b.jid), "bob's first presence")
        b.wait_for(presence_from(a.jid), "alice's first presence")

        settle(a, b)
        a.send(f"<inactive xmlns='{NS_CSI}'/>")
        a.iq("get", "<ping xmlns='urn:xmpp:ping'/>")  # the server has read <inactive/>
        b.send("<presence><show>away</show></presence>")
        b.send("<presence><show>dnd</show></presence>")
        # A marker behind them on the same path: an IQ from bob to alice is neither held nor
        # flushes what is held, so every presence routed before it would arrive before it.
        b.send(f"<iq type='get' id='marker' to='{a.jid}'><ping xmlns='urn:xmpp:ping'/></iq>")
        a.wait_for(lambda e: e.get("id") == "marker", "bob's ping")
        held = [e for e in a.backlog if presence_from(b.jid)(e)]
        assert not held, f"presence reached an inactive client:\n{a.log()}"

        a.send(f"<active xmlns='{NS_CSI}'/>")
        p = a.wait_for(presence_from(b.jid), "bob's presence after becoming active")
        assert p.findtext(q(NS_CLIENT, "show")) == "dnd", f"not the latest presence:\n{a.log()}"
        # The superseded 'away' never comes: a message sent now arrives next.
        b.send(f"<message to='{a.jid}' type='chat'><body>after</body></message>")
        nxt = a.next()
        assert is_msg("after")(nxt), f"expected the message, got a stale presence:\n{a.log()}"


def test_a_message_flushes_held_presence_first(xb):
    pw = add_users(xb, "alice", "bob")
    with RawXmpp(xb.xmpp_port) as a, RawXmpp(xb.xmpp_port) as b:
        a.login("alice", pw["alice"], "a")
        b.login("bob", pw["bob"], "b")
        subscribe_both(a, b)
        a.wait_for(presence_from(b.jid), "bob's first presence")
        settle(a, b)
        a.send(f"<inactive xmlns='{NS_CSI}'/>")
        a.iq("get", "<ping xmlns='urn:xmpp:ping'/>")  # the server has read <inactive/>
        b.send("<presence><show>xa</show></presence>")
        b.send(f"<message to='alice@{DOMAIN}' type='chat'><body>wake up</body></message>")
        first = a.wait_for(lambda e: presence_from(b.jid)(e) or is_msg("wake up")(e),
                           "the held presence or the message")
        assert presence_from(b.jid, "xa")(first), f"the held presence must come first:\n{a.log()}"
        assert is_msg("wake up")(a.next()), a.log()
