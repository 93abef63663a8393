"""Publish-subscribe (XEP-0060) and PEP (XEP-0163) with slixmpp: a node's life with two
subscribers on pubsub.localhost, access models and the XEP's errors, items across a restart,
PEP avatars (XEP-0084) notified only to resources whose entity capabilities (XEP-0115) carry
`+notify`, nicknames (XEP-0172) and bookmarks (XEP-0402) with publish options. Tributary only.

"Did not receive" is shown by order, never by a pause: a stanza that must not arrive is
followed by one that must, on the same route, and the latter must come first.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
import pytest_asyncio

from xmpp_support import (DOMAIN, WAIT, Slix, SlixPool, add_users, skip_unless_tributary,
                          xb, xmpp_factory, xmpp_restartable)  # noqa: F401 (fixtures)

pytestmark = [skip_unless_tributary, pytest.mark.asyncio]

SVC = f"pubsub.{DOMAIN}"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
PUBSUB = ("xep_0004", "xep_0030", "xep_0060")
PEP = PUBSUB + ("xep_0115", "xep_0163")


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


def entry(text: str) -> ET.Element:
    e = ET.Element("{urn:example:news}entry")
    e.text = text
    return e


async def expect_error(fut, condition: str, app: str | None = None):
    """The iq fails with `condition` (and the pubsub#errors `app` condition, if given)."""
    from slixmpp.exceptions import IqError

    with pytest.raises(IqError) as info:
        await fut
    err = info.value.iq["error"]
    assert err["condition"] == condition, str(info.value.iq)
    if app is not None:
        assert err.xml.find(f"{{{NS_ERRORS}}}{app}") is not None, str(info.value.iq)


def form(c: Slix, form_type: str, **fields) -> object:
    f = c.c.plugin["xep_0004"].make_form(ftype="submit")
    f.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for var, value in fields.items():
        f.add_field(var=f"pubsub#{var}", value=value)
    return f


def node_config(c: Slix, **fields):
    return form(c, "http://jabber.org/protocol/pubsub#node_config", **fields)


def publish_options(c: Slix, **fields):
    return form(c, "http://jabber.org/protocol/pubsub#publish-options", **fields)


def event_items(msg) -> tuple[str, list[str]]:
    items = msg["pubsub_event"]["items"]
    return items["node"], [i["id"] for i in items]


async def mutual_subscription(a: Slix, b: Slix):
    for x, y in ((a, b), (b, a)):
        x.c.send_presence_subscription(pto=y.bare)
        await y.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == x.bare)
        y.c.send_presence(pto=x.bare, ptype="subscribed")
        await x.next_presence(lambda p: p["type"] == "subscribed" and p["from"].bare == y.bare)


# ---------------------------------------------------------------------------------------------
# pubsub.localhost


async def test_service_is_discovered(xb, slix):
    pw = add_users(xb, "alice")
    a = await slix.new(xb, "alice", pw["alice"], "a", plugins=PUBSUB).start()
    disco = a.c.plugin["xep_0030"]
    items = await disco.get_items(jid=DOMAIN, timeout=WAIT)
    assert SVC in [i[0] for i in items["disco_items"]["items"]]
    info = await disco.get_info(jid=SVC, timeout=WAIT)
    assert any(i[0] == "pubsub" and i[1] == "service" for i in info["disco_info"]["identities"])
    features = info["disco_info"]["features"]
    for f in ("create-nodes", "delete-nodes", "publish", "retract-items", "retrieve-items",
              "subscribe", "config-node", "persistent-items", "access-whitelist",
              "instant-nodes", "item-ids", "publish-options"):
        assert f"http://jabber.org/protocol/pubsub#{f}" in features, f


async def test_node_lifecycle_with_two_subscribers(xb, slix):
    pw = add_users(xb, "alice", "bob", "carol")
    # Notifications to a bare JID go to its available resources (RFC 6121 §8.5.2.1.1).
    a = await slix.new(xb, "alice", pw["alice"], "a", plugins=PUBSUB).start(presence=True)
    b = await slix.new(xb, "bob", pw["bob"], "b", plugins=PUBSUB).start(presence=True)
    c = await slix.new(xb, "carol", pw["carol"], "c", plugins=PUBSUB).start(presence=True)
    ps = a.c.plugin["xep_0060"]
    for x in (a, b, c):
        for ev in ("pubsub_publish", "pubsub_retract", "pubsub_delete"):
            x.on(ev)

    await ps.create_node(SVC, "news", timeout=WAIT)
    await ps.set_node_config(SVC, "news", node_config(a, max_items="5", title="News",
                                                      notify_retract="1"), timeout=WAIT)
    cfg = await ps.get_node_config(SVC, "news", timeout=WAIT)
    values = cfg["pubsub_owner"]["configure"]["form"].get_values()
    assert values["pubsub#max_items"] == "5" and values["pubsub#title"] == "News", values

    subids = []
    for x in (b, c):
        res = await x.c.plugin["xep_0060"].subscribe(SVC, "news", timeout=WAIT)
        sub = res["pubsub"]["subscription"]
        assert sub["subscription"] == "subscribed" and sub["jid"].bare == x.bare, str(res)
        subids.append(sub["subid"])
    assert subids[0] and subids[0] != subids[1]

    res = await ps.publish(SVC, "news", id="n1", payload=entry("first"), timeout=WAIT)
    assert res["pubsub"]["publish"]["item"]["id"] == "n1"
    for x in (b, c):
        msg = await x.event("pubsub_publish")
        assert msg["from"] == SVC
        assert event_items(msg) == ("news", ["n1"])
        got = msg["pubsub_event"]["items"]["item"]["payload"]
        assert got is not None and got.text == "first"

    # An item id chosen by the service.
    res = await ps.publish(SVC, "news", payload=entry("second"), timeout=WAIT)
    gen = res["pubsub"]["publish"]["item"]["id"]
    assert gen and gen != "n1"
    for x in (b, c):
        assert event_items(await x.event("pubsub_publish")) == ("news", [gen])

    # Retrieval: all, newest one, by id.
    items = await b.c.plugin["xep_0060"].get_items(SVC, "news", timeout=WAIT)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["n1", gen]
    items = await b.c.plugin["xep_0060"].get_items(SVC, "news", max_items=1, timeout=WAIT)
    assert [i["id"] for i in items["pubsub"]["items"]] == [gen]
    items = await b.c.plugin["xep_0060"].get_item(SVC, "news", "n1", timeout=WAIT)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["n1"]

    # Retract, notified.
    await ps.retract(SVC, "news", "n1", notify=True, timeout=WAIT)
    for x in (b, c):
        msg = await x.event("pubsub_retract")
        assert msg["pubsub_event"]["items"]["node"] == "news"
        assert msg["pubsub_event"]["items"]["retract"]["id"] == "n1"

    # Owner lists: subscriptions and affiliations.
    subs = await ps.get_node_subscriptions(SVC, "news", timeout=WAIT)
    assert sorted(s["jid"].bare for s in subs["pubsub_owner"]["subscriptions"]) == [b.bare, c.bare]
    affs = await ps.get_node_affiliations(SVC, "news", timeout=WAIT)
    assert [(x["jid"].bare, x["affiliation"]) for x in affs["pubsub_owner"]["affiliations"]] == [
        (a.bare, "owner")]

    # carol leaves; bob alone is told of the deletion.
    await c.c.plugin["xep_0060"].unsubscribe(SVC, "news", timeout=WAIT)
    await expect_error(c.c.plugin["xep_0060"].unsubscribe(SVC, "news", timeout=WAIT),
                       "unexpected-request", "not-subscribed")
    await ps.delete_node(SVC, "news", timeout=WAIT)
    msg = await b.event("pubsub_delete")
    assert msg["pubsub_event"]["delete"]["node"] == "news"
    await expect_error(b.c.plugin["xep_0060"].get_items(SVC, "news", timeout=WAIT), "item-not-found")


async def test_bad_input_gets_the_xep_errors(xb, slix):
    pw = add_users(xb, "alice", "bob")
    a = await slix.new(xb, "alice", pw["alice"], "a", plugins=PUBSUB).start()
    b = await slix.new(xb, "bob", pw["bob"], "b", plugins=PUBSUB).start()
    ps, bps = a.c.plugin["xep_0060"], b.c.plugin["xep_0060"]

    # Unknown node.
    await expect_error(bps.get_items(SVC, "nope", timeout=WAIT), "item-not-found")
    await expect_error(bps.subscribe(SVC, "nope", timeout=WAIT), "item-not-found")
    # An existing node cannot be created again.
    await ps.create_node(SVC, "closed", config=node_config(a, access_model="whitelist"),
                         timeout=WAIT)
    await expect_error(bps.create_node(SVC, "closed", timeout=WAIT), "conflict")
    # Whitelist access: bob may neither subscribe nor read, nor publish.
    await expect_error(bps.subscribe(SVC, "closed", timeout=WAIT), "not-allowed", "closed-node")
    await expect_error(bps.get_items(SVC, "closed", timeout=WAIT), "not-allowed", "closed-node")
    await expect_error(bps.publish(SVC, "closed", payload=entry("x"), timeout=WAIT), "forbidden")
    await expect_error(bps.delete_node(SVC, "closed", timeout=WAIT), "forbidden")
    # An oversized item (under the stanza limit, over the item limit).
    await expect_error(ps.publish(SVC, "closed", payload=entry("x" * 220_000), timeout=WAIT),
                       "not-acceptable", "payload-too-big")
    # Bad configuration value.
    await expect_error(ps.set_node_config(SVC, "closed", node_config(a, max_items="-3"),
                                          timeout=WAIT), "not-acceptable")
    # Publish options not met.
    await expect_error(ps.publish(SVC, "closed", payload=entry("x"),
                                  options=publish_options(a, access_model="open"), timeout=WAIT),
                       "conflict", "precondition-not-met")
    # Whitelisted, bob gets in.
    await ps.modify_affiliations(SVC, "closed", [(b.bare, "member")], timeout=WAIT)
    await bps.subscribe(SVC, "closed", timeout=WAIT)
    await bps.get_items(SVC, "closed", timeout=WAIT)

    # An instant node: the service names it.
    res = await ps.create_node(SVC, None, timeout=WAIT)
    assert res["pubsub"]["create"]["node"]


@pytest.mark.parametrize("how", ["term"])
async def test_nodes_and_items_survive_restart(xmpp_restartable, how):
    b = xmpp_restartable
    pw = add_users(b, "alice", "bob")
    pool = SlixPool()
    try:
        a = await pool.new(b, "alice", pw["alice"], "a", plugins=PUBSUB).start()
        ps = a.c.plugin["xep_0060"]
        await ps.create_node(SVC, "log", config=node_config(a, max_items="3"), timeout=WAIT)
        for i in range(4):
            await ps.publish(SVC, "log", id=f"i{i}", payload=entry(f"e{i}"), timeout=WAIT)
        bob = await pool.new(b, "bob", pw["bob"], "b", plugins=PUBSUB).start()
        await bob.c.plugin["xep_0060"].subscribe(SVC, "log", timeout=WAIT)
    finally:
        await pool.close()

    b.restart(how)

    pool = SlixPool()
    try:
        bob = await pool.new(b, "bob", pw["bob"], "b2", plugins=PUBSUB).start()
        bps = bob.c.plugin["xep_0060"]
        items = await bps.get_items(SVC, "log", timeout=WAIT)
        got = [(i["id"], i["payload"].text) for i in items["pubsub"]["items"]]
        assert got == [("i1", "e1"), ("i2", "e2"), ("i3", "e3")]
        subs = await bps.get_subscriptions(SVC, "log", timeout=WAIT)
        assert [s["jid"].bare for s in subs["pubsub"]["subscriptions"]] == [bob.bare]
        # The configuration came back too.
        a = await pool.new(b, "alice", pw["alice"], "a2", plugins=PUBSUB).start()
        cfg = await a.c.plugin["xep_0060"].get_node_config(SVC, "log", timeout=WAIT)
        assert cfg["pubsub_owner"]["configure"]["form"].get_values()["pubsub#max_items"] == "3"
    finally:
        await pool.close()


# ---------------------------------------------------------------------------------------------
# PEP


async def start_with_caps(x: Slix):
    """Session start, caps computed, then initial presence (carrying them)."""
    await x.start()
    await asyncio.wait_for(x.c.plugin["xep_0115"].update_caps(broadcast=False), WAIT)
    x.c.send_presence()


async def test_pep_avatar_notifies_only_interested_contacts(xb, slix):
    pw = add_users(xb, "alice", "bob", "carol")
    a = slix.new(xb, "alice", pw["alice"], "a", plugins=PEP + ("xep_0084", "xep_0172"))
    b = slix.new(xb, "bob", pw["bob"], "b", plugins=PEP + ("xep_0084",))  # avatar+notify
    c = slix.new(xb, "carol", pw["carol"], "c", plugins=PEP + ("xep_0172",))  # nick+notify only
    for x in (b, c):
        x.on("avatar_metadata_publish")
        x.on("pubsub_publish")
    for x in (a, b, c):
        await start_with_caps(x)
    await mutual_subscription(a, b)
    await mutual_subscription(a, c)

    # The account advertises PEP.
    info = await b.c.plugin["xep_0030"].get_info(jid=a.bare, timeout=WAIT)
    assert any(i[0] == "pubsub" and i[1] == "pep" for i in info["disco_info"]["identities"])
    assert "http://jabber.org/protocol/pubsub#publish" in info["disco_info"]["features"]

    png = b"\x89PNG fake avatar bytes"
    avatar = a.c.plugin["xep_0084"]
    await avatar.publish_avatar(png, timeout=WAIT)
    aid = avatar.generate_id(png)
    await avatar.publish_avatar_metadata({"id": aid, "type": "image/png", "bytes": len(png)},
                                         timeout=WAIT)
    await a.c.plugin["xep_0172"].publish_nick("Alice", timeout=WAIT)

    # bob (avatar+notify) is told of the metadata; he fetches the data.
    msg = await b.event("avatar_metadata_publish")
    assert msg["from"].bare == a.bare
    info_el = msg["pubsub_event"]["items"]["item"]["avatar_metadata"]["info"]
    assert info_el["id"] == aid
    data = await b.c.plugin["xep_0084"].retrieve_avatar(a.bare, aid, timeout=WAIT)
    assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == png

    # carol (no avatar+notify) gets the nick, and nothing from the avatar nodes before it.
    msg = await c.event("pubsub_publish")
    assert event_items(msg) == ("http://jabber.org/protocol/nick", ["current"]), str(msg)


async def test_pep_bookmarks_whitelist_and_publish_options(xb, slix):
    pw = add_users(xb, "alice", "bob")
    a = slix.new(xb, "alice", pw["alice"], "a", plugins=PEP + ("xep_0402",))
    b = slix.new(xb, "bob", pw["bob"], "b", plugins=PEP)
    await a.start(presence=True)
    await b.start(presence=True)
    await mutual_subscription(a, b)
    from slixmpp.plugins.xep_0402.stanza import Conference, NS as BOOKMARKS

    opts = dict(persist_items="true", access_model="whitelist", max_items="max",
                send_last_published_item="never")
    ps = a.c.plugin["xep_0060"]
    for room in ("one@conference.localhost", "two@conference.localhost"):
        conf = Conference()
        conf["name"] = room.split("@")[0]
        conf["autojoin"] = True
        conf["nick"] = "al"
        await ps.publish(a.bare, BOOKMARKS, id=room, payload=conf,
                         options=publish_options(a, **opts), timeout=WAIT)
    items = await ps.get_items(a.bare, BOOKMARKS, timeout=WAIT)
    got = {i["id"]: i["conference"]["name"] for i in items["pubsub"]["items"]}
    assert got == {"one@conference.localhost": "one", "two@conference.localhost": "two"}
    # The node got the options as its configuration.
    cfg = await ps.get_node_config(a.bare, BOOKMARKS, timeout=WAIT)
    values = cfg["pubsub_owner"]["configure"]["form"].get_values()
    assert values["pubsub#access_model"] == "whitelist", values
    # A contact may not read them; nobody else publishes there.
    bps = b.c.plugin["xep_0060"]
    await expect_error(bps.get_items(a.bare, BOOKMARKS, timeout=WAIT), "not-allowed", "closed-node")
    await expect_error(bps.publish(a.bare, BOOKMARKS, payload=Conference(), timeout=WAIT),
                       "forbidden")
    # Options that contradict the node's configuration are a failed precondition.
    await expect_error(ps.publish(a.bare, BOOKMARKS, id="x@y", payload=Conference(),
                                  options=publish_options(a, access_model="presence"),
                                  timeout=WAIT), "conflict", "precondition-not-met")
    # Retract one.
    await ps.retract(a.bare, BOOKMARKS, "one@conference.localhost", notify=True, timeout=WAIT)
    items = await ps.get_items(a.bare, BOOKMARKS, timeout=WAIT)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["two@conference.localhost"]
