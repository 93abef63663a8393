"""Message Archive Management (XEP-0313) with slixmpp's xep_0313 and xep_0059 plugins: an
account's one-to-one archive (both directions, stanza-id on delivery) paged over 30 messages
(first page, next page, last page through an empty <before/>), the `with` filter, a room's
archive queried at the room, and the archive kept across a restart. Tributary only; every
wait is bounded.
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from slixmpp.exceptions import IqError

from test_xmpp_muc import MUC, PLUGINS, client, create, groupchat, join, muc, people
from xmpp_support import (DOMAIN, WAIT, SlixPool, add_users, skip_unless_tributary,  # noqa: F401
                          xb, xmpp_factory, xmpp_restartable)

pytestmark = [skip_unless_tributary, pytest.mark.asyncio]

NS_SID = "urn:xmpp:sid:0"


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


def mam(c):
    return c.c.plugin["xep_0313"]


def bodies(res) -> list[str]:
    return [m["mam_result"]["forwarded"]["stanza"]["body"] for m in res["mam"]["results"]]


async def send_and_sync(sender, to, texts, receiver):
    """Sends chat messages and waits until the receiver has them all (so they are archived)."""
    for t in texts:
        sender.c.send_message(mto=to, mbody=t, mtype="chat")
    got = []
    for t in texts:
        got.append(await receiver.next_message(lambda m, t=t: m["body"] == t))
    return got


async def test_one_to_one_archive_paging(xb, slix):
    alice, bob = await people(xb, slix, "alice", "bob")
    texts = [f"msg-{i:02}" for i in range(30)]
    received = await send_and_sync(alice, f"bob@{DOMAIN}", texts, bob)
    # XEP-0359: the recipient's archive id comes with the message.
    sid = received[0].xml.find(f"{{{NS_SID}}}stanza-id")
    assert sid is not None and sid.get("by") == f"bob@{DOMAIN}", str(received[0])

    first = await mam(bob).retrieve(rsm={"max": 10}, timeout=WAIT)
    assert bodies(first) == texts[:10]
    fin = first["mam_fin"]
    assert fin["complete"] in (False, "false", None, "")
    assert fin["rsm"]["count"] == "30" and fin["rsm"]["first_index"] == "0"
    assert first["mam"]["results"][0]["mam_result"]["id"] == sid.get("id")

    second = await mam(bob).retrieve(rsm={"max": 10, "after": fin["rsm"]["last"]}, timeout=WAIT)
    assert bodies(second) == texts[10:20]
    assert second["mam_fin"]["rsm"]["first_index"] == "10"

    # The last page: RSM's empty <before/> (slixmpp's reverse iteration asks for it).
    last = [m["mam_result"]["forwarded"]["stanza"]["body"]
            async for m in mam(bob).iterate(reverse=True, rsm={"max": 10}, total=10)]
    assert last == list(reversed(texts[20:]))

    # Paging to the end: the final page is complete.
    third = await mam(bob).retrieve(rsm={"max": 10, "after": second["mam_fin"]["rsm"]["last"]}, timeout=WAIT)
    assert bodies(third) == texts[20:]
    assert third["mam_fin"]["complete"] in (True, "true")

    # The sender archived them too, and `with` filters.
    mine = await mam(alice).retrieve(with_jid=f"bob@{DOMAIN}", rsm={"max": 50}, timeout=WAIT)
    assert bodies(mine) == texts
    none = await mam(alice).retrieve(with_jid=f"carol@{DOMAIN}", timeout=WAIT)
    assert bodies(none) == [] and none["mam_fin"]["rsm"]["count"] == "0"

    # An unknown RSM id is item-not-found; someone else's archive is not reachable.
    with pytest.raises(IqError) as e:
        await mam(bob).retrieve(rsm={"max": 10, "after": "42"}, timeout=WAIT)
    assert e.value.condition == "item-not-found"
    with pytest.raises(IqError) as e:
        await mam(bob).retrieve(jid=f"alice@{DOMAIN}", timeout=WAIT)
    assert e.value.condition == "service-unavailable"


async def test_room_archive(xb, slix):
    alice, bob = await people(xb, slix, "alice", "bob")
    room = f"archived@{MUC}"
    await create(alice, room, "Alice")
    texts = [f"room-{i:02}" for i in range(12)]
    for t in texts:
        alice.c.send_message(mto=room, mbody=t, mtype="groupchat")
        await alice.next_message(groupchat(t))
    # Queried at the room (bob is not in it: the room is public).
    res = await mam(bob).retrieve(jid=room, rsm={"max": 5}, timeout=WAIT)
    assert bodies(res) == texts[:5]
    assert all(str(m["mam_result"]["forwarded"]["stanza"]["from"]) == f"{room}/Alice"
               for m in res["mam"]["results"])
    assert res["mam_fin"]["rsm"]["count"] == "12"
    tail = [m["mam_result"]["forwarded"]["stanza"]["body"]
            async for m in mam(bob).iterate(jid=room, reverse=True, rsm={"max": 5}, total=5)]
    assert tail == list(reversed(texts[7:]))
    # An outcast may not read it.
    await muc(alice).set_affiliation(room, "outcast", jid=f"bob@{DOMAIN}", timeout=WAIT)
    with pytest.raises(IqError) as e:
        await mam(bob).retrieve(jid=room, timeout=WAIT)
    assert e.value.condition == "forbidden"
    # disco advertises MAM on the account.
    info = await bob.c.plugin["xep_0030"].get_info(jid=f"bob@{DOMAIN}", timeout=WAIT)
    assert "urn:xmpp:mam:2" in info["disco_info"]["features"]
    _ = join


async def test_archive_survives_restart(xmpp_restartable):
    b = xmpp_restartable
    pw = add_users(b, "alice", "bob")
    texts = [f"kept-{i}" for i in range(5)]
    pool = SlixPool()
    try:
        alice = await client(pool, b, "alice", pw["alice"])
        bob = await client(pool, b, "bob", pw["bob"])
        await send_and_sync(alice, f"bob@{DOMAIN}", texts, bob)
        before = await mam(bob).retrieve(timeout=WAIT)
    finally:
        await pool.close()

    b.restart("term")

    pool = SlixPool()
    try:
        bob = await client(pool, b, "bob", pw["bob"])
        after = await mam(bob).retrieve(timeout=WAIT)
        assert bodies(after) == texts
        ids = lambda r: [m["mam_result"]["id"] for m in r["mam"]["results"]]  # noqa: E731
        assert ids(after) == ids(before)
    finally:
        await pool.close()
