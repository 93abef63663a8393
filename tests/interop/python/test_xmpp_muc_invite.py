"""Multi-User Chat (XEP-0045) mediated invitations (§7.8.2, §9.3) and voice requests (§7.13,
§8.6) with slixmpp's xep_0045 plugin: an invitation through the room (with the room password)
and its decline back to the inviter; a members-only room where an admin's invitation makes the
invitee a member and a mere member's is refused with <forbidden/> until the room allows member
invitations; a visitor asking for voice and the moderator approving the form. Tributary only;
every wait is bounded (xmpp_support.Slix).
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from slixmpp.exceptions import PresenceError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from xmpp_support import (DOMAIN, WAIT, SlixPool, add_users, skip_unless_tributary,  # noqa: F401
                          xb, xmpp_factory)

pytestmark = [skip_unless_tributary, pytest.mark.asyncio]

MUC = f"conference.{DOMAIN}"
PLUGINS = ("xep_0030", "xep_0045", "xep_0004", "xep_0203")
NS_REQUEST = "http://jabber.org/protocol/muc#request"
NS_USER = "http://jabber.org/protocol/muc#user"


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


async def people(b, pool, *names):
    pw = add_users(b, *names)
    out = []
    for n in names:
        c = pool.new(b, n, pw[n], "r", plugins=PLUGINS)
        for ev in ("groupchat_invite", "groupchat_presence", "decline", "message_error",
                   "message_xform"):
            c.on(ev)
        # slixmpp 1.17's own "groupchat_decline" never fires for a client (it looks the room up
        # in the wrong dict): the same stanza path, with our own event.
        c.c.register_handler(Callback("decline", StanzaPath("message/muc/decline"),
                                      lambda m, c=c: c.c.event("decline", m)))
        out.append(await c.start(presence=True))
    return out


def muc(c):
    return c.c.plugin["xep_0045"]


async def join(c, room, nick, **kw):
    return await muc(c).join_muc_wait(room, nick, timeout=WAIT, **kw)


async def create(owner, room, nick, **values):
    """Creates `room` and submits its configuration form (muc#roomconfig_<name> = value)."""
    await join(owner, room, nick)
    form = await muc(owner).get_room_config(room, timeout=WAIT)
    form.set_type("submit")
    for name, value in values.items():
        form.field[f"muc#roomconfig_{name}"].set_value(value)
    await muc(owner).set_room_config(room, form, timeout=WAIT)


async def test_invitation_with_password_and_decline(xb, slix):
    alice, bob = await people(xb, slix, "alice", "bob")
    room = f"party@{MUC}"
    await create(alice, room, "Alice", passwordprotectedroom=True, roomsecret="cake")

    muc(alice).invite(room, bob.bare, reason="join us")
    inv = await bob.event("groupchat_invite")
    assert inv["from"] == room
    assert inv["muc"]["invite"]["from"] == alice.bare
    assert inv["muc"]["invite"]["reason"] == "join us"
    # slixmpp has no interface for the password: read the XML.
    password = inv.xml.find(f"{{{NS_USER}}}x/{{{NS_USER}}}password")
    assert password is not None and password.text == "cake", str(inv)

    muc(bob).decline(room, alice.bare, reason="on a diet")
    dec = await alice.event("decline")

    assert dec["from"] == room
    assert dec["muc"]["decline"]["from"] == bob.bare
    assert dec["muc"]["decline"]["reason"] == "on a diet"

    # An invitation naming an account that does not exist: item-not-found (§7.8.2).
    muc(alice).invite(room, f"nobody@{DOMAIN}")
    err = await alice.event("message_error")
    assert err["from"] == room
    assert err["error"]["condition"] == "item-not-found", str(err)


async def test_members_only_invitations(xb, slix):
    alice, bob, carol, dave = await people(xb, slix, "alice", "bob", "carol", "dave")
    room = f"club@{MUC}"
    await create(alice, room, "Alice", membersonly=True)
    # (dave, not bob: slixmpp ignores invitations to a room it tried to join.)
    with pytest.raises(PresenceError) as e:
        await join(dave, room, "Dave")
    assert e.value.condition == "registration-required"

    # The owner's invitation makes bob a member: now he may enter.
    muc(alice).invite(room, bob.bare)
    inv = await bob.event("groupchat_invite")
    assert inv["muc"]["invite"]["from"] == alice.bare
    members = await muc(alice).get_affiliation_list(room, "member", timeout=WAIT)
    assert [str(j) for j in members] == [bob.bare]
    pres, _, _, _ = await join(bob, room, "Bob")
    assert pres["muc"]["affiliation"] == "member"

    # A mere member may not invite (§9.3)...
    muc(bob).invite(room, carol.bare)
    err = await bob.event("message_error")
    assert err["from"] == room
    assert err["error"]["condition"] == "forbidden", str(err)
    # ...until the owner allows it (muc#roomconfig_allowinvites).
    form = await muc(alice).get_room_config(room, timeout=WAIT)
    assert "muc#roomconfig_allowinvites" in form.field
    form.set_type("submit")
    form.field["muc#roomconfig_allowinvites"].set_value(True)
    await muc(alice).set_room_config(room, form, timeout=WAIT)
    muc(bob).invite(room, carol.bare)
    inv = await carol.event("groupchat_invite")
    assert inv["muc"]["invite"]["from"] == bob.bare
    pres, _, _, _ = await join(carol, room, "Carol")
    assert pres["muc"]["affiliation"] == "member"


async def test_voice_request_approved_by_the_moderator(xb, slix):
    alice, bob = await people(xb, slix, "alice", "bob")
    room = f"stage@{MUC}"
    await create(alice, room, "Alice", moderatedroom=True)
    info = await bob.c.plugin["xep_0030"].get_info(jid=room, timeout=WAIT)
    assert NS_REQUEST in info["disco_info"]["features"]
    pres, _, _, _ = await join(bob, room, "Bob")
    assert pres["muc"]["role"] == "visitor"

    muc(bob).request_voice(room, "participant")
    msg = await alice.event("message_xform")  # xep_0004's event for a message with a form
    assert msg["from"] == room and msg["form"]["type"] == "form", str(msg)
    # (slixmpp gives some single values as one-element lists)
    values = {k: v[0] if isinstance(v, list) and len(v) == 1 else v
              for k, v in msg["form"].get_values().items()}
    assert values["FORM_TYPE"] == NS_REQUEST
    assert values["muc#roomnick"] == "Bob"
    assert str(values["muc#jid"]) == bob.jid
    assert values["muc#request_allow"] is False

    # The moderator submits the form with muc#request_allow checked.
    answer = alice.c.make_message(room)
    form = answer["form"]
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_REQUEST)
    form.add_field(var="muc#role", value="participant")
    form.add_field(var="muc#jid", value=bob.jid)
    form.add_field(var="muc#roomnick", value="Bob")
    form.add_field(var="muc#request_allow", ftype="boolean", value=True)
    answer.send()

    while True:
        p = await bob.event("groupchat_presence")
        if p["from"].resource == "Bob" and p["muc"]["role"] == "participant":
            break
    bob.c.send_message(mto=room, mbody="hello, stage", mtype="groupchat")
    m = await alice.next_message(lambda m: m["type"] == "groupchat" and m["body"] == "hello, stage")
    assert m["from"].resource == "Bob"
