"""`[xmpp] max_depth` (issue 9, "Limits"): the element nesting limit of the XML stream parser is
configurable; at the limit a stanza is accepted, one level deeper is `<policy-violation/>`."""

from __future__ import annotations

from xmpp_support import (NS_CLIENT, RawXmpp, add_users, is_msg, q, skip_unless_tributary,
                          xmpp_factory)  # noqa: F401  (fixture)

pytestmark = skip_unless_tributary


def nested(depth: int, to: str) -> str:
    """A message whose innermost element is at `depth`, counted from the stanza (depth 1)."""
    inner = depth - 1  # <message> is at depth 1, the <x/> chain at 2 and below
    return (f"<message to='{to}'><body>nest</body>" + "<x xmlns='urn:example:n'>" * inner
            + "</x>" * inner + "</message>")


def test_configured_max_depth(xmpp_factory):
    b = xmpp_factory("[xmpp]\nmax_depth = 6\n")
    pw = add_users(b, "alice")["alice"]
    with RawXmpp(b.xmpp_port) as c:
        c.login("alice", pw, "depth")
        c.send(nested(6, c.jid))
        m = c.wait_for(is_msg(), "the message at the limit, echoed to ourselves")
        assert m.findtext(q(NS_CLIENT, "body")) == "nest"
        c.send(nested(7, c.jid))
        err = c.expect_stream_error()
        assert err.error == "policy-violation", c.log()
        assert c.wait_closed()
