"""XMPP interop with slixmpp (a real third-party client library): login over STARTTLS with each
SASL mechanism slixmpp speaks and over direct TLS (XEP-0368), a wrong password, roster
add/remove with pushes, the subscription handshake, presence broadcast and unavailable,
directed presence, messages between resources and to bare JIDs (priorities), offline
delivery after a restart (XEP-0160, XEP-0203), stream resumption after a dropped TCP
connection (XEP-0198), carbons (XEP-0280), blocking (XEP-0191), ping (XEP-0199), disco
(XEP-0030), version (XEP-0092), vcard-temp (XEP-0054) and service-unavailable for unknown
IQ payloads. Tributary only. Every wait is bounded (asyncio.wait_for in xmpp_support.Slix).

"Did not receive" is always shown by order, never by a pause: after the stanza that must
not arrive, a marker stanza is sent along the same route, and the marker must be the next
thing the client sees.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import xml.etree.ElementTree as ET

import pytest
import pytest_asyncio

from xmpp_support import (DOMAIN, WAIT, Slix, SlixPool, add_users, skip_unless_tributary,
                          xb, xmpp_factory, xmpp_restartable)  # noqa: F401 (fixtures)

pytestmark = [skip_unless_tributary, pytest.mark.asyncio]


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


def body_is(text):
    return lambda m: m["type"] in ("chat", "normal") and m["body"] == text


async def mutual_subscription(a: Slix, b: Slix):
    """a and b subscribe to each other (RFC 6121 §3.1), each approving the other's request."""
    for x, y in ((a, b), (b, a)):
        x.c.send_presence_subscription(pto=y.bare)
        await y.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == x.bare)
        y.c.send_presence(pto=x.bare, ptype="subscribed")
        await x.next_presence(lambda p: p["type"] == "subscribed" and p["from"].bare == y.bare)


# ---------------------------------------------------------------------------------------------
# Login


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_login_starttls_each_mechanism(xb, slix, mech):
    pw = add_users(xb, "alice")["alice"]
    c = await slix.new(xb, "alice", pw, "desk", mech=mech).start()
    assert c.jid == f"alice@{DOMAIN}/desk"
    assert c.c.plugin["feature_mechanisms"].mech.name == mech
    assert "starttls" in c.c.features, "the session must have gone through STARTTLS"
    assert isinstance(c.c.socket, (ssl.SSLObject, ssl.SSLSocket)), "not encrypted after STARTTLS"
    assert c.c.socket.version() in ("TLSv1.2", "TLSv1.3")
    # The session is usable: a ping to the server is answered.
    c.c.register_plugin("xep_0199")
    await c.c.plugin["xep_0199"].send_ping(DOMAIN, timeout=WAIT)


async def test_login_direct_tls(xb, slix):
    pw = add_users(xb, "alice")["alice"]
    c = await slix.new(xb, "alice", pw, "tls", mech="SCRAM-SHA-256", direct_tls=True).start()
    assert c.jid == f"alice@{DOMAIN}/tls"
    assert "starttls" not in c.c.features, "direct TLS offers no STARTTLS (the stream is already secure)"
    assert isinstance(c.c.socket, (ssl.SSLObject, ssl.SSLSocket))


async def test_server_assigns_a_resource_when_none_is_asked(xb, slix):
    pw = add_users(xb, "alice")["alice"]
    c = await slix.new(xb, "alice", pw).start()
    assert c.bare == f"alice@{DOMAIN}"
    assert c.c.boundjid.resource, f"no resource in the bound JID {c.jid}"


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_wrong_password_is_not_authorized(xb, slix, mech):
    add_users(xb, "alice")
    c = slix.new(xb, "alice", "not-the-password", "x", mech=mech)
    c.connect()
    await c.event("failed_all_auth")
    assert len(c.auth_failures) == 1, c.auth_failures
    assert c.auth_failures[0]["condition"] == "not-authorized", str(c.auth_failures[0])
    assert c.events["session_start"].empty()


async def test_guest_default_account_on_loopback(xb, slix):
    c = await slix.new(xb, "guest", "guest", "g").start()
    assert c.bare == f"guest@{DOMAIN}"


# ---------------------------------------------------------------------------------------------
# Roster


async def test_roster_add_and_remove_with_pushes(xb, slix):
    pw = add_users(xb, "alice", "bob")
    a1 = await slix.new(xb, "alice", pw["alice"], "one").start(roster=True)
    a2 = await slix.new(xb, "alice", pw["alice"], "two").start(roster=True)

    await asyncio.wait_for(a1.c.update_roster(f"bob@{DOMAIN}", name="Bobby", groups=["Friends", "Work"]), WAIT)
    for c in (a1, a2):  # RFC 6121 §2.3.2: a push to every interested resource
        push = await c.next_roster_push()
        items = push["roster"]["items"]
        assert list(items) == [f"bob@{DOMAIN}"], items
        item = items[f"bob@{DOMAIN}"]
        assert item["name"] == "Bobby"
        assert sorted(item["groups"]) == ["Friends", "Work"]
        assert item["subscription"] == "none"

    # A new resource fetching the roster sees the stored item.
    a3 = await slix.new(xb, "alice", pw["alice"], "three").start()
    items = await a3.fetch_roster()
    assert list(items) == [f"bob@{DOMAIN}"] and items[f"bob@{DOMAIN}"]["name"] == "Bobby"

    # Rename, then remove.
    await asyncio.wait_for(a2.c.update_roster(f"bob@{DOMAIN}", name="Bob", groups=[]), WAIT)
    for c in (a1, a2):
        item = (await c.next_roster_push())["roster"]["items"][f"bob@{DOMAIN}"]
        assert item["name"] == "Bob" and item["groups"] == []
    await asyncio.wait_for(a1.c.del_roster_item(f"bob@{DOMAIN}"), WAIT)
    for c in (a1, a2):
        item = (await c.next_roster_push())["roster"]["items"][f"bob@{DOMAIN}"]
        assert item["subscription"] == "remove"
    assert await a3.fetch_roster() == {}


async def test_roster_set_on_someone_elses_roster_is_forbidden(xb, slix):
    pw = add_users(xb, "alice", "bob")
    a = await slix.new(xb, "alice", pw["alice"], "one").start()
    iq = a.c.make_iq_set(ito=f"bob@{DOMAIN}")
    iq.enable("roster")
    iq["roster"]["items"] = {f"carol@{DOMAIN}": {"name": "C", "subscription": "none", "groups": []}}
    from slixmpp.exceptions import IqError

    with pytest.raises(IqError) as ei:
        await iq.send(timeout=WAIT)
    # RFC 6121 §2.1.5: a roster set with a 'to' of another account: <forbidden/>.
    assert ei.value.iq["error"]["condition"] == "forbidden", str(ei.value.iq)


# ---------------------------------------------------------------------------------------------
# Subscriptions and presence


async def test_subscription_handshake(xb, slix):
    pw = add_users(xb, "alice", "bob")
    alice = await slix.new(xb, "alice", pw["alice"], "a").start(roster=True, presence=True)
    bob = await slix.new(xb, "bob", pw["bob"], "b").start(roster=True, presence=True)
    bob_jid, alice_jid = f"bob@{DOMAIN}", f"alice@{DOMAIN}"

    alice.c.send_presence_subscription(pto=bob_jid)
    # RFC 6121 §3.1.2: the user's server pushes the item with ask='subscribe' ...
    item = (await alice.next_roster_push())["roster"]["items"][bob_jid]
    assert (item["subscription"], item["ask"]) == ("none", "subscribe"), dict(item)
    # ... §3.1.3: the contact gets the request from the user's bare JID.
    req = await bob.next_presence(lambda p: p["type"] == "subscribe")
    assert req["from"] == alice_jid, str(req)

    bob.c.send_presence(pto=alice_jid, ptype="subscribed")
    # §3.1.5: bob's roster now has alice with subscription 'from' ...
    item = (await bob.next_roster_push())["roster"]["items"][alice_jid]
    assert item["subscription"] == "from", dict(item)
    # ... alice receives 'subscribed' and a push with subscription 'to' ...
    ok = await alice.next_presence(lambda p: p["type"] == "subscribed")
    assert ok["from"].bare == bob_jid
    item = (await alice.next_roster_push())["roster"]["items"][bob_jid]
    assert item["subscription"] == "to" and not item["ask"], dict(item)
    # ... §3.1.6: and bob's available presence, from his full JID.
    avail = await alice.next_presence(lambda p: p["type"] == "available" and p["from"].bare == bob_jid)
    assert avail["from"] == bob.jid, str(avail)

    # The other direction: both.
    bob.c.send_presence_subscription(pto=alice_jid)
    req = await alice.next_presence(lambda p: p["type"] == "subscribe")
    assert req["from"] == bob_jid
    alice.c.send_presence(pto=bob_jid, ptype="subscribed")
    avail = await bob.next_presence(lambda p: p["type"] == "available" and p["from"].bare == alice_jid)
    assert avail["from"] == alice.jid, str(avail)

    for c, other in ((alice, bob_jid), (bob, alice_jid)):
        items = await c.fetch_roster()
        assert items[other]["subscription"] == "both", items


async def test_subscription_persists_and_probe_on_login(xb, slix):
    pw = add_users(xb, "alice", "bob")
    alice = await slix.new(xb, "alice", pw["alice"], "a").start(presence=True)
    bob = await slix.new(xb, "bob", pw["bob"], "b").start(presence=True)
    await mutual_subscription(alice, bob)
    await bob.next_presence(lambda p: p["type"] == "available" and p["from"] == alice.jid)
    # A second resource of alice comes online: the server probes her contacts and delivers
    # bob's current presence to it (RFC 6121 §4.2.2, §4.3.2), and broadcasts hers to bob and
    # to alice's other resource.
    a2 = await slix.new(xb, "alice", pw["alice"], "second").start()
    a2.c.send_presence(pstatus="back", ppriority=3)
    got = await a2.next_presence(lambda p: p["type"] == "available" and p["from"] == bob.jid)
    assert got["from"] == bob.jid
    seen = await bob.next_presence(lambda p: p["from"] == a2.jid)
    assert seen["type"] == "available" and seen["status"] == "back" and seen["priority"] == 3, str(seen)
    own = await alice.next_presence(lambda p: p["from"] == a2.jid)
    assert own["type"] == "available", str(own)


async def test_presence_broadcast_and_unavailable(xb, slix):
    pw = add_users(xb, "alice", "bob")
    alice = await slix.new(xb, "alice", pw["alice"], "a").start(presence=True)
    bob = await slix.new(xb, "bob", pw["bob"], "b").start(presence=True)
    await mutual_subscription(alice, bob)

    alice.c.send_presence(pshow="away", pstatus="lunch")
    p = await bob.next_presence(lambda p: p["from"] == alice.jid and p["show"] == "away")
    assert p["status"] == "lunch"

    # Explicit unavailable presence.
    alice.c.send_presence(ptype="unavailable", pstatus="bye")
    p = await bob.next_presence(lambda p: p["from"] == alice.jid and p["type"] == "unavailable")
    assert p["status"] == "bye"
    alice.c.send_presence(pstatus="again")
    await bob.next_presence(lambda p: p["from"] == alice.jid and p["status"] == "again")

    # A dropped TCP connection (no stream close) also ends in unavailable for the contacts
    # (RFC 6120 §4.6 / RFC 6121 §4.5.3).
    alice.abort()
    p = await bob.next_presence(lambda p: p["from"] == alice.jid and p["type"] == "unavailable")
    assert p["status"] != "bye", "that was the earlier explicit unavailable"

    # A clean stream close as well.
    a2 = await slix.new(xb, "alice", pw["alice"], "c").start(presence=True)
    await bob.next_presence(lambda p: p["from"] == a2.jid and p["type"] == "available")
    await a2.stop()
    await bob.next_presence(lambda p: p["from"] == a2.jid and p["type"] == "unavailable")


async def test_no_presence_without_subscription_but_directed_presence(xb, slix):
    pw = add_users(xb, "alice", "carol")
    carol = await slix.new(xb, "carol", pw["carol"], "c").start(presence=True)
    alice = await slix.new(xb, "alice", pw["alice"], "a").start(presence=True)
    # carol is not subscribed: alice's broadcast must not reach her. Proof by order: the
    # directed presence that follows must be the first presence carol gets from alice.
    alice.c.send_presence(pstatus="broadcast")
    alice.c.send_presence(pto=carol.jid, pstatus="directed")
    p = await carol.next_presence(lambda p: p["from"].bare == alice.bare)
    assert p["status"] == "directed", f"carol got alice's broadcast without a subscription: {p}"
    # RFC 6121 §4.6.3: on going offline, entities that got directed presence get unavailable.
    await alice.stop()
    p = await carol.next_presence(lambda p: p["from"].bare == alice.bare)
    assert p["type"] == "unavailable" and p["from"] == alice.jid, str(p)


# ---------------------------------------------------------------------------------------------
# Messages


async def test_messages_full_jid_bare_jid_and_priorities(xb, slix):
    pw = add_users(xb, "alice", "bob")
    alice = await slix.new(xb, "alice", pw["alice"], "a").start(presence=True)
    hi = await slix.new(xb, "bob", pw["bob"], "hi").start(presence=True, priority=5)
    lo = await slix.new(xb, "bob", pw["bob"], "lo").start(presence=True, priority=1)
    neg = await slix.new(xb, "bob", pw["bob"], "neg").start(presence=True, priority=-1)
    # Make sure the priorities are known to the server before routing: a ping round trip
    # after each presence (stanzas from one stream are processed in order).
    for c in (hi, lo, neg):
        c.c.register_plugin("xep_0199")
        await c.c.plugin["xep_0199"].send_ping(DOMAIN, timeout=WAIT)

    # Full JID: exactly that resource.
    alice.c.send_message(mto=lo.jid, mbody="to-lo", mtype="chat")
    m = await lo.next_message(body_is("to-lo"))
    assert m["from"] == alice.jid and m["to"] == lo.jid

    # Bare JID: the highest-priority resource gets it (RFC 6121 §8.5.2.1.1, both (a) and (b)),
    # a negative-priority resource never does.
    alice.c.send_message(mto=f"bob@{DOMAIN}", mbody="to-bare", mtype="chat")
    m = await hi.next_message()
    assert m["body"] == "to-bare" and m["from"] == alice.jid, str(m)
    alice.c.send_message(mto=neg.jid, mbody="marker-neg", mtype="chat")
    m = await neg.next_message()
    assert m["body"] == "marker-neg", f"negative-priority resource got a bare-JID message: {m}"
    # The full-JID message to lo did not reach hi: hi's next message is a marker.
    alice.c.send_message(mto=hi.jid, mbody="marker-hi", mtype="chat")
    m = await hi.next_message()
    assert m["body"] == "marker-hi", str(m)

    # Between two resources of the same account.
    hi.c.send_message(mto=lo.jid, mbody="sibling", mtype="chat")
    m = await lo.next_message(body_is("sibling"))
    assert m["from"] == hi.jid

    # Normal (no type) message with a subject and a thread survives intact.
    msg = alice.c.make_message(mto=lo.jid, mbody="n", msubject="subj")
    msg["thread"] = "t-1"
    msg.send()
    m = await lo.next_message(lambda m: m["body"] == "n")
    assert m["type"] == "normal" and m["subject"] == "subj" and m["thread"] == "t-1", str(m)


async def test_message_to_an_unavailable_full_jid_of_an_online_user_goes_to_bare(xb, slix):
    pw = add_users(xb, "alice", "bob")
    alice = await slix.new(xb, "alice", pw["alice"], "a").start(presence=True)
    bob = await slix.new(xb, "bob", pw["bob"], "b").start(presence=True)
    bob.c.register_plugin("xep_0199")
    await bob.c.plugin["xep_0199"].send_ping(DOMAIN, timeout=WAIT)
    # RFC 6121 §8.5.3.2.1: a chat message to a full JID with no such resource is treated
    # as if it were addressed to the bare JID (or bounced); it must not be lost silently.
    alice.c.send_message(mto=f"bob@{DOMAIN}/gone", mbody="to-gone", mtype="chat")
    got_bob = asyncio.ensure_future(bob.next_message(body_is("to-gone")))
    got_err = asyncio.ensure_future(alice.next_message(lambda m: m["type"] == "error"))
    done, pending = await asyncio.wait({got_bob, got_err}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    assert done, "the message to a missing resource was neither delivered to the bare JID nor bounced"
    if got_err in done:
        assert got_err.result()["error"]["condition"] == "service-unavailable", str(got_err.result())


# ---------------------------------------------------------------------------------------------
# Offline messages across a restart


@pytest.mark.parametrize("how", ["term"])
async def test_offline_messages_survive_restart(xmpp_restartable, how):
    b = xmpp_restartable
    pw = add_users(b, "alice", "bob")
    pool = SlixPool()
    try:
        alice = await pool.new(b, "alice", pw["alice"], "a").start(presence=True)
        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        for i in range(3):
            alice.c.send_message(mto=f"bob@{DOMAIN}", mbody=f"offline-{i}", mtype="chat")
        # A round trip after the messages: the server has handled them (same stream, in order).
        alice.c.register_plugin("xep_0199")
        await alice.c.plugin["xep_0199"].send_ping(DOMAIN, timeout=WAIT)
        after = dt.datetime.now(dt.timezone.utc)
        await pool.close()
    finally:
        await pool.close()

    b.restart(how)

    pool = SlixPool()
    try:
        bob = pool.new(b, "bob", pw["bob"], "phone", plugins=("xep_0203",))
        await bob.start(presence=True)  # XEP-0160: delivered on initial (non-negative) presence
        for i in range(3):
            m = await bob.next_message()
            assert m["body"] == f"offline-{i}" and m["from"].bare == f"alice@{DOMAIN}", str(m)
            # XEP-0203: a delay stamp from the server, when the message was stored.
            assert m["delay"]["from"] == DOMAIN, str(m)
            stamp = m["delay"]["stamp"]
            assert stamp is not None, str(m)
            assert before - dt.timedelta(seconds=1) <= stamp <= after + dt.timedelta(seconds=1), (stamp, before, after)
        await bob.stop()

        # Delivered means gone: the next login gets nothing old. Proof by order: a fresh
        # message must be the first one.
        bob2 = await pool.new(b, "bob", pw["bob"], "phone2").start(presence=True)
        alice = await pool.new(b, "alice", pw["alice"], "a2").start(presence=True)
        alice.c.send_message(mto=bob2.jid, mbody="fresh", mtype="chat")
        m = await bob2.next_message()
        assert m["body"] == "fresh", f"offline messages delivered twice: {m}"
    finally:
        await pool.close()


# ---------------------------------------------------------------------------------------------
# Stream management (XEP-0198) with slixmpp


async def test_stream_resumption_after_dropped_tcp(xb, slix):
    pw = add_users(xb, "alice", "bob")
    alice = slix.new(xb, "alice", pw["alice"], "sm", plugins=("xep_0198",))
    await alice.start(presence=True)
    enabled = await alice.event("sm_enabled")
    assert enabled["id"], f"<enabled/> without an id: {enabled}"
    assert enabled["resume"] in (True, "true", "1"), f"resumption not granted: {enabled}"
    bob = await slix.new(xb, "bob", pw["bob"], "b").start(presence=True)

    alice.c.send_message(mto=bob.jid, mbody="before-drop", mtype="chat")
    await bob.next_message(body_is("before-drop"))

    alice.abort()  # TCP gone: no </stream:stream>, no final <a/>
    await alice.event("disconnected")
    bob.c.send_message(mto=alice.jid, mbody="while-away", mtype="chat")
    bob.c.register_plugin("xep_0199")
    await bob.c.plugin["xep_0199"].send_ping(DOMAIN, timeout=WAIT)  # handled by the server

    alice.connect()
    resumed = await alice.event("session_resumed")
    assert resumed["previd"] == enabled["id"], str(resumed)
    assert alice.events["session_start"].empty(), "a new session was started instead of resuming"
    m = await alice.next_message(body_is("while-away"))
    assert m["from"] == bob.jid
    # The resumed session keeps its full JID and works both ways.
    alice.c.send_message(mto=bob.jid, mbody="after-resume", mtype="chat")
    m = await bob.next_message()
    assert m["body"] == "after-resume" and m["from"] == alice.jid, str(m)


# ---------------------------------------------------------------------------------------------
# Carbons, blocking


async def test_carbons(xb, slix):
    pw = add_users(xb, "alice", "bob")
    a1 = await slix.new(xb, "alice", pw["alice"], "one", plugins=("xep_0280",)).start(presence=True)
    a2 = await slix.new(xb, "alice", pw["alice"], "two", plugins=("xep_0280",)).start(presence=True)
    plain = await slix.new(xb, "alice", pw["alice"], "nocarbons").start(presence=True)
    bob = await slix.new(xb, "bob", pw["bob"], "b").start(presence=True)
    for c in (a1, a2):
        await asyncio.wait_for(c.c.plugin["xep_0280"].enable(), WAIT)

    # Received: bob -> alice/one; alice/two gets a <received/> carbon.
    bob.c.send_message(mto=a1.jid, mbody="hello-one", mtype="chat")
    await a1.next_message(body_is("hello-one"))
    carbon = await a2.event("carbon_received")
    fwd = carbon["carbon_received"]
    assert fwd["body"] == "hello-one" and fwd["from"] == bob.jid and fwd["to"] == a1.jid, str(carbon)
    assert carbon["from"] == f"alice@{DOMAIN}", f"a carbon must come from the bare JID: {carbon['from']}"

    # Sent: alice/one -> bob; alice/two gets a <sent/> carbon.
    a1.c.send_message(mto=bob.jid, mbody="hi-bob", mtype="chat")
    await bob.next_message(body_is("hi-bob"))
    carbon = await a2.event("carbon_sent")
    fwd = carbon["carbon_sent"]
    assert fwd["body"] == "hi-bob" and fwd["to"] == bob.jid, str(carbon)

    # <private/> (XEP-0280 §7) is not copied: alice/two's next carbon is the following one.
    msg = a1.c.make_message(mto=bob.jid, mbody="secret", mtype="chat")
    msg.enable("carbon_private")
    msg.send()
    await bob.next_message(body_is("secret"))
    a1.c.send_message(mto=bob.jid, mbody="public", mtype="chat")
    await bob.next_message(body_is("public"))
    carbon = await a2.event("carbon_sent")
    assert carbon["carbon_sent"]["body"] == "public", f"a <private/> message was carbon-copied: {carbon}"

    # A resource that never enabled carbons gets none: its first message is a direct one.
    bob.c.send_message(mto=plain.jid, mbody="direct", mtype="chat")
    m = await plain.next_message()
    assert m["body"] == "direct", f"carbons sent to a resource that did not enable them: {m}"


def pushed_jids(iq, kind: str) -> set[str]:
    el = iq.xml.find(f"{{urn:xmpp:blocking}}{kind}")
    assert el is not None, f"no <{kind}/> in {iq}"
    return {i.get("jid") for i in el.findall("{urn:xmpp:blocking}item")}


async def test_blocking(xb, slix):
    pw = add_users(xb, "alice", "bob")
    a1 = await slix.new(xb, "alice", pw["alice"], "one", plugins=("xep_0191",)).start(presence=True)
    a2 = await slix.new(xb, "alice", pw["alice"], "two", plugins=("xep_0191",)).start(presence=True)
    a2.on("blocked"), a2.on("unblocked")
    bob = await slix.new(xb, "bob", pw["bob"], "b").start(presence=True)
    await mutual_subscription(a1, bob)
    plugin = a1.c.plugin["xep_0191"]
    # Block pushes go to the resources that requested the blocklist (XEP-0191 §3.3).
    await asyncio.wait_for(a2.c.plugin["xep_0191"].get_blocked(), WAIT)

    blocked = await asyncio.wait_for(plugin.get_blocked(), WAIT)
    assert pushed_jids(blocked, "blocklist") == set()
    await asyncio.wait_for(plugin.block(f"bob@{DOMAIN}"), WAIT)
    # XEP-0191 §3.3: a push to the user's other resources.
    push = await a2.event("blocked")
    assert pushed_jids(push, "block") == {f"bob@{DOMAIN}"}, str(push)
    blocked = await asyncio.wait_for(plugin.get_blocked(), WAIT)
    assert pushed_jids(blocked, "blocklist") == {f"bob@{DOMAIN}"}
    # ... and bob, subscribed to alice, now sees her unavailable.
    p = await bob.next_presence(lambda p: p["from"].bare == f"alice@{DOMAIN}" and p["type"] == "unavailable")
    assert p["type"] == "unavailable"

    # §3.5: a message from the blocked entity is not delivered; the sender gets
    # <service-unavailable/>.
    bob.c.send_message(mto=a1.jid, mbody="blocked-msg", mtype="chat")
    err = await bob.next_message(lambda m: m["type"] == "error")
    assert err["error"]["condition"] == "service-unavailable", str(err)
    # §3.6: the user sending to a blocked entity gets <not-acceptable/> with <blocked/>.
    a1.c.send_message(mto=bob.jid, mbody="to-blocked", mtype="chat")
    err = await a1.next_message(lambda m: m["type"] == "error")
    assert err["error"]["condition"] == "not-acceptable", str(err)
    assert err.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None, str(err)

    await asyncio.wait_for(plugin.unblock(f"bob@{DOMAIN}"), WAIT)
    push = await a2.event("unblocked")
    assert pushed_jids(push, "unblock") == {f"bob@{DOMAIN}"}, str(push)
    bob.c.send_message(mto=a1.jid, mbody="after-unblock", mtype="chat")
    m = await a1.next_message(lambda m: m["type"] in ("chat", "error"))
    assert m["body"] == "after-unblock" and m["type"] == "chat", f"first message after unblocking: {m}"
    blocked = await asyncio.wait_for(plugin.get_blocked(), WAIT)
    assert pushed_jids(blocked, "blocklist") == set()


# ---------------------------------------------------------------------------------------------
# Ping, disco, version, vcard, unknown IQ


async def test_ping(xb, slix):
    from slixmpp.exceptions import IqError

    pw = add_users(xb, "alice", "bob")
    alice = await slix.new(xb, "alice", pw["alice"], "a", plugins=("xep_0199",)).start(presence=True)
    bob = await slix.new(xb, "bob", pw["bob"], "b", plugins=("xep_0199",)).start(presence=True)
    res = await alice.c.plugin["xep_0199"].send_ping(DOMAIN, timeout=WAIT)
    assert res["type"] == "result" and res["from"] == DOMAIN, str(res)
    # Client to client, through the server (slixmpp answers pings itself).
    res = await alice.c.plugin["xep_0199"].send_ping(bob.jid, timeout=WAIT)
    assert res["type"] == "result" and res["from"] == bob.jid, str(res)
    # RFC 6121 §8.5.3.2.2: an IQ to a full JID with no such resource: <service-unavailable/>.
    with pytest.raises(IqError) as ei:
        await alice.c.plugin["xep_0199"].send_ping(f"bob@{DOMAIN}/nope", timeout=WAIT)
    assert ei.value.iq["error"]["condition"] == "service-unavailable", str(ei.value.iq)


async def test_disco_and_version(xb, slix):
    pw = add_users(xb, "alice")
    c = await slix.new(xb, "alice", pw["alice"], "a", plugins=("xep_0030", "xep_0092")).start()
    info = await c.c.plugin["xep_0030"].get_info(DOMAIN, timeout=WAIT)
    identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    assert ("server", "im") in identities, identities
    features = set(info["disco_info"]["features"])
    for f in ("http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
              "urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:carbons:2", "urn:xmpp:blocking",
              "vcard-temp", "msgoffline"):
        assert f in features, f"{f} missing from the server's disco#info: {sorted(features)}"
    items = await c.c.plugin["xep_0030"].get_items(DOMAIN, timeout=WAIT)
    assert items["type"] == "result"
    version = await c.c.plugin["xep_0092"].get_version(DOMAIN, timeout=WAIT)
    assert version["software_version"]["name"] == "Tributary", str(version)
    assert version["software_version"]["version"], str(version)


async def test_vcard_temp(xb, slix):
    pw = add_users(xb, "alice", "bob")
    alice = await slix.new(xb, "alice", pw["alice"], "a", plugins=("xep_0054",)).start()
    bob = await slix.new(xb, "bob", pw["bob"], "b", plugins=("xep_0054",)).start()
    vc = alice.c.plugin["xep_0054"].make_vcard()
    vc["FN"] = "Alice Liddell"
    vc["NICKNAME"] = "ally"
    await alice.c.plugin["xep_0054"].publish_vcard(vc, timeout=WAIT)
    got = await bob.c.plugin["xep_0054"].get_vcard(f"alice@{DOMAIN}", local=False, timeout=WAIT)
    assert got["vcard_temp"]["FN"] == "Alice Liddell", str(got)
    assert got["vcard_temp"]["NICKNAME"] in ("ally", ["ally"]), str(got)
    # Own vCard: an IQ without 'to' (RFC 6120 §10.3.3: handled on behalf of the account).
    iq = alice.c.make_iq_get()
    iq.enable("vcard_temp")
    own = await iq.send(timeout=WAIT)
    assert own["vcard_temp"]["FN"] == "Alice Liddell", str(own)


async def test_unknown_iq_namespace_is_service_unavailable(xb, slix):
    from slixmpp.exceptions import IqError

    pw = add_users(xb, "alice", "bob")
    alice = await slix.new(xb, "alice", pw["alice"], "a").start()
    await slix.new(xb, "bob", pw["bob"], "b").start()
    for to in (DOMAIN, f"bob@{DOMAIN}"):
        iq = alice.c.make_iq_get(ito=to)
        iq.append(ET.Element("{urn:example:tributary:nothing}query"))
        with pytest.raises(IqError) as ei:
            await iq.send(timeout=WAIT)
        # RFC 6120 §8.4 / RFC 6121 §8.5.2.1.3, §8.5.1.
        assert ei.value.iq["error"]["condition"] == "service-unavailable", str(ei.value.iq)
        assert ei.value.iq["error"]["type"] == "cancel", str(ei.value.iq)
