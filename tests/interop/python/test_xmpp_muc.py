"""Multi-User Chat (XEP-0045) and MUC self-ping (XEP-0410) with slixmpp's xep_0045 and
xep_0410 plugins: a three-person room with history for a late joiner, subject and a private
message; kick, ban and voice in a moderated room; a reserved room configured through the
form; a password-protected room; a persistent room surviving a broker restart; the XEP's
errors for bad input. Tributary only; every wait is bounded (xmpp_support.Slix).
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from slixmpp.exceptions import IqError, PresenceError
from slixmpp.plugins.xep_0410 import PingStatus

from xmpp_support import (DOMAIN, WAIT, SlixPool, add_users, skip_unless_tributary,  # noqa: F401
                          xb, xmpp_factory, xmpp_restartable)

pytestmark = [skip_unless_tributary, pytest.mark.asyncio]

MUC = f"conference.{DOMAIN}"
PLUGINS = ("xep_0030", "xep_0045", "xep_0199", "xep_0410", "xep_0203", "xep_0004", "xep_0059",
           "xep_0313")


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


async def people(b, pool, *names):
    pw = add_users(b, *names)
    return [await client(pool, b, n, pw[n]) for n in names]


async def client(pool, b, name, password):
    c = pool.new(b, name, password, "r", plugins=PLUGINS)
    c.on("groupchat_subject")  # subject-only messages have no body: no "message" event
    c.on("groupchat_presence")  # slixmpp hides room presences from its "presence" event
    return await c.start(presence=True)


async def muc_presence(c, match):
    """The next room presence for which `match` holds (others are skipped)."""
    while True:
        p = await c.event("groupchat_presence")
        if match(p):
            return p


async def subject_seen(c, text):
    """Waits for a subject message with `text` (earlier ones, e.g. on joining, are skipped)."""
    while True:
        m = await c.event("groupchat_subject")
        if m["subject"] == text:
            return m


def muc(c):
    return c.c.plugin["xep_0045"]


async def join(c, room, nick, **kw):
    return await muc(c).join_muc_wait(room, nick, timeout=WAIT, **kw)


def codes(stanza) -> set[int]:
    return {int(s) for s in stanza["muc"]["status_codes"]}


async def configure(owner, room, **values):
    """Fills the room's configuration form (muc#roomconfig_<name> = value) and submits it."""
    form = await muc(owner).get_room_config(room, timeout=WAIT)
    form.set_type("submit")
    for name, value in values.items():
        form.field[f"muc#roomconfig_{name}"].set_value(value)
    await muc(owner).set_room_config(room, form, timeout=WAIT)


async def create(owner, room, nick="Owner", **values):
    """Creates `room` (status 201) and configures it (the reserved-room path)."""
    pres, _, _, _ = await join(owner, room, nick)
    assert 201 in codes(pres) and 110 in codes(pres), str(pres)
    await configure(owner, room, **values)


def groupchat(body):
    return lambda m: m["type"] == "groupchat" and m["body"] == body


async def test_three_person_room_history_subject_private_message(xb, slix):
    alice, bob, carol = await people(xb, slix, "alice", "bob", "carol")
    room = f"lounge@{MUC}"
    await create(alice, room, "Alice")
    pres, _, occupants, _ = await join(bob, room, "Bob")
    # slixmpp's occupant list includes our own presence, which comes last.
    assert [p["from"].resource for p in occupants] == ["Alice", "Bob"]
    assert pres["muc"]["role"] == "participant" and pres["muc"]["affiliation"] == "none"
    muc(alice).set_subject(room, "Weekly sync")
    await subject_seen(bob, "Weekly sync")
    for who, text in ((alice, "first"), (bob, "second")):
        who.c.send_message(mto=room, mbody=text, mtype="groupchat")
        for c in (alice, bob):  # reflected to everyone, the sender included
            m = await c.next_message(groupchat(text))
            assert m["from"].bare == room
    # The late joiner gets the history (stamped by the room) and then the subject.
    _, subject, occupants, history = await join(carol, room, "Carol", maxstanzas=10)
    assert [p["from"].resource for p in occupants] == ["Alice", "Bob", "Carol"]
    assert [(m["from"].resource, m["body"]) for m in history] == [("Alice", "first"), ("Bob", "second")]
    assert all(m["delay"]["from"] == room for m in history)
    assert subject["subject"] == "Weekly sync"
    # A private message between occupants goes through the room.
    bob.c.send_message(mto=f"{room}/Carol", mbody="psst", mtype="chat")
    m = await carol.next_message(lambda m: m["body"] == "psst")
    assert str(m["from"]) == f"{room}/Bob" and m["type"] == "chat"
    # Leaving: the others see unavailable presence.
    muc(carol).leave_muc(room, "Carol")
    p = await muc_presence(alice, lambda p: p["type"] == "unavailable" and p["from"].resource == "Carol")
    assert p["muc"]["role"] == "none"


async def test_kick_ban_and_voice_in_a_moderated_room(xb, slix):
    alice, bob, carol, dave = await people(xb, slix, "alice", "bob", "carol", "dave")
    room = f"modroom@{MUC}"
    await create(alice, room, "Alice", moderatedroom=True)
    pres, _, _, _ = await join(bob, room, "Bob")
    assert pres["muc"]["role"] == "visitor"
    # A visitor may not speak.
    bob.c.send_message(mto=room, mbody="can I talk?", mtype="groupchat")
    err = await bob.next_message(lambda m: m["type"] == "error")
    assert err["error"]["condition"] == "forbidden"
    # Voice granted: now he may.
    await muc(alice).set_role(room, "Bob", "participant", timeout=WAIT)
    p = await muc_presence(bob, lambda p: p["from"].resource == "Bob" and p["muc"]["role"] == "participant")
    bob.c.send_message(mto=room, mbody="thanks", mtype="groupchat")
    await alice.next_message(groupchat("thanks"))
    # A participant may not kick.
    await join(carol, room, "Carol")
    with pytest.raises(IqError) as e:
        await muc(bob).set_role(room, "Carol", "none", timeout=WAIT)
    assert e.value.condition == "forbidden"
    # Kick: carol is told with 307 (and 110), the others with 307.
    await muc(alice).set_role(room, "Carol", "none", reason="cool down", timeout=WAIT)
    p = await muc_presence(carol, lambda p: p["type"] == "unavailable" and p["from"].bare == room)
    assert {307, 110} <= codes(p), str(p)
    p = await muc_presence(bob, lambda p: p["type"] == "unavailable" and p["from"].resource == "Carol")
    assert 307 in codes(p)
    # Ban: 301, and no way back in.
    await join(dave, room, "Dave")
    await muc(alice).set_affiliation(room, "outcast", jid=f"dave@{DOMAIN}", reason="spam", timeout=WAIT)
    p = await muc_presence(dave, lambda p: p["type"] == "unavailable" and p["from"].bare == room)
    assert 301 in codes(p) and p["muc"]["affiliation"] == "outcast"
    with pytest.raises(PresenceError) as e:
        await join(dave, room, "Dave")
    assert e.value.condition == "forbidden"
    outcasts = await muc(alice).get_affiliation_list(room, "outcast", timeout=WAIT)
    assert [str(j) for j in outcasts] == [f"dave@{DOMAIN}"]


async def test_reserved_room_configured_through_the_form(xb, slix):
    alice, bob, carol = await people(xb, slix, "alice", "bob", "carol")
    room = f"board@{MUC}"
    await join(alice, room, "Alice")
    form = await muc(alice).get_room_config(room, timeout=WAIT)
    for name in ("roomname", "roomdesc", "persistentroom", "publicroom", "membersonly",
                 "passwordprotectedroom", "roomsecret", "moderatedroom", "whois", "maxusers",
                 "changesubject", "historylength"):
        assert f"muc#roomconfig_{name}" in form.field, name
    # Locked until configured.
    with pytest.raises(PresenceError) as e:
        await join(bob, room, "Bob")
    assert e.value.condition == "item-not-found"
    await configure(alice, room, roomname="The Board", roomdesc="owners only", membersonly=True,
                    publicroom=False, whois="anyone")
    info = await bob.c.plugin["xep_0030"].get_info(jid=room, timeout=WAIT)
    features = set(info["disco_info"]["features"])
    assert {"http://jabber.org/protocol/muc", "muc_membersonly", "muc_hidden", "muc_nonanonymous",
            "muc_temporary", "muc_unsecured", "muc_unmoderated", "urn:xmpp:mam:2"} <= features
    assert [i[3] for i in info["disco_info"]["identities"]] == ["The Board"]
    form = await muc(alice).get_room_config(room, timeout=WAIT)
    assert form.field["muc#roomconfig_roomname"].get_value() == "The Board"
    # Members only.
    with pytest.raises(PresenceError) as e:
        await join(bob, room, "Bob")
    assert e.value.condition == "registration-required"
    await muc(alice).set_affiliation(room, "member", jid=f"bob@{DOMAIN}", timeout=WAIT)
    pres, _, _, _ = await join(bob, room, "Bob")
    assert 100 in codes(pres)  # non-anonymous
    # Hidden: not listed by the service.
    items = await carol.c.plugin["xep_0030"].get_items(jid=MUC, timeout=WAIT)
    assert room not in [i[0] for i in items["disco_items"]["items"]]


async def test_password_protected_room(xb, slix):
    alice, bob = await people(xb, slix, "alice", "bob")
    room = f"secret@{MUC}"
    await create(alice, room, "Alice", passwordprotectedroom=True, roomsecret="opensesame")
    for pw in (None, "wrong"):
        with pytest.raises(PresenceError) as e:
            await join(bob, room, "Bob", password=pw)
        assert e.value.condition == "not-authorized"
    pres, _, _, _ = await join(bob, room, "Bob", password="opensesame")
    assert 110 in codes(pres)


async def test_bad_input_gets_the_xeps_errors(xb, slix):
    alice, bob = await people(xb, slix, "alice", "bob")
    room = f"rules@{MUC}"
    await create(alice, room, "Alice")
    # A non-join stanza to a room that does not exist.
    bob.c.send_message(mto=f"nowhere@{MUC}", mbody="hello?", mtype="groupchat")
    err = await bob.next_message(lambda m: m["type"] == "error")
    assert err["error"]["condition"] == "item-not-found"
    with pytest.raises(IqError) as e:
        await bob.c.plugin["xep_0030"].get_info(jid=f"nowhere@{MUC}", timeout=WAIT)
    assert e.value.condition == "item-not-found"
    # Groupchat from a non-occupant.
    bob.c.send_message(mto=room, mbody="not in", mtype="groupchat")
    err = await bob.next_message(lambda m: m["type"] == "error")
    assert err["error"]["condition"] == "not-acceptable"
    # Oversized nickname; nickname in use.
    with pytest.raises(PresenceError) as e:
        await join(bob, room, "n" * 100)
    assert e.value.condition == "not-acceptable"
    with pytest.raises(PresenceError) as e:
        await join(bob, room, "Alice")
    assert e.value.condition == "conflict"
    # Self-ping (XEP-0410): not joined, then joined.
    ping = bob.c.plugin["xep_0410"]
    assert await ping.send_self_ping(f"{room}/Bob", timeout=WAIT) == PingStatus.DISCONNECTED
    await join(bob, room, "Bob")
    assert await ping.send_self_ping(f"{room}/Bob", timeout=WAIT) == PingStatus.JOINED
    # Only owners may configure or destroy.
    with pytest.raises(IqError) as e:
        await muc(bob).destroy(room, timeout=WAIT)
    assert e.value.condition == "forbidden"
    await muc(alice).destroy(room, reason="closing", timeout=WAIT)
    p = await muc_presence(bob, lambda p: p["type"] == "unavailable" and p["from"].bare == room)
    assert p.xml.find(".//{http://jabber.org/protocol/muc#user}destroy") is not None


async def test_persistent_room_survives_restart(xmpp_restartable):
    b = xmpp_restartable
    pw = add_users(b, "alice", "bob")
    room = f"kept@{MUC}"
    pool = SlixPool()
    try:
        alice = await client(pool, b, "alice", pw["alice"])
        await create(alice, room, "Alice", persistentroom=True, roomname="Kept Room")
        await muc(alice).set_affiliation(room, "admin", jid=f"bob@{DOMAIN}", timeout=WAIT)
        muc(alice).set_subject(room, "Still here")
        await subject_seen(alice, "Still here")
        alice.c.send_message(mto=room, mbody="before the restart", mtype="groupchat")
        await alice.next_message(groupchat("before the restart"))
    finally:
        await pool.close()

    b.restart("term")

    pool = SlixPool()
    try:
        bob = await client(pool, b, "bob", pw["bob"])
        items = await bob.c.plugin["xep_0030"].get_items(jid=MUC, timeout=WAIT)
        assert (room, None, "Kept Room") in items["disco_items"]["items"]
        pres, subject, _, history = await join(bob, room, "Bob", maxstanzas=5)
        assert pres["muc"]["affiliation"] == "admin" and pres["muc"]["role"] == "moderator"
        assert subject["subject"] == "Still here"
        assert [m["body"] for m in history] == ["before the restart"]
        info = await bob.c.plugin["xep_0030"].get_info(jid=room, timeout=WAIT)
        assert "muc_persistent" in info["disco_info"]["features"]
    finally:
        await pool.close()
