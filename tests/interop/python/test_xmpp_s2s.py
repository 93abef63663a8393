"""XMPP federation between two Tributary instances (a.test and b.test) on loopback, with slixmpp
clients: the subscription handshake across servers, presence, chat both ways, a peer going down
(the sender gets `<remote-server-not-found/>`) and a peer coming back (the next stanza opens a
new stream).

Ports are never guessed: A starts first with its server-to-server listener on port 0 and an
empty `[xmpp.s2s] peers_file`; B starts with A's port (read back from A's log) in its static
`peers` map; then B's port goes into A's peers file, which A reads at each connection attempt.

Two ways of authenticating the servers to each other are run: SASL EXTERNAL with certificates
(each side lists the other in `insecure_domains`, accepting its self-signed certificate) and
Server Dialback (no certificate is accepted, so B dials A back to verify A's key).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
import pytest_asyncio

from xmpp_support import Slix, SlixPool, XmppBroker, add_users, skip_unless_tributary

pytestmark = [skip_unless_tributary, pytest.mark.asyncio]

S2S_RE = re.compile(r"listening protocol=xmpp-server addr=127\.0\.0\.1:(\d+)")


class DomainBroker(XmppBroker):
    """An XmppBroker serving `domain`, whose self-signed certificate is for that domain."""

    def __init__(self, root: Path, domain: str, extra: str):
        super().__init__(root, f'\n[xmpp]\ndomain = "{domain}"\n{extra}')
        self.domain = domain
        self.s2s_port = 0
        self.ca_path: Path | None = None  # set when the broker has a CA-issued certificate

    def start(self):
        super().start()
        m = self.wait_log(S2S_RE)
        assert m, f"no s2s listener line:\n{self.log_text()[-3000:]}"
        self.s2s_port = int(m.group(1))

    @property
    def cert_path(self) -> Path:
        return self.ca_path or self.data_dir / "xmpp" / f"{self.domain}.crt"


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def federation(request, tmp_path_factory):
    """make(mode) -> (A, B, start_b): two brokers that know each other. mode is "external"
    (certificates) or "dialback". start_b() starts another B (new data dir) and points A at it."""
    made: list[DomainBroker] = []
    roots: list[Path] = []

    def new(domain: str, extra: str) -> DomainBroker:
        root = Path(tempfile.mkdtemp(prefix=f"tributary-s2s-{domain}-"))
        roots.append(root)
        b = DomainBroker(root, domain, extra)
        made.append(b)
        b.start()
        return b

    def make(mode: str):
        insecure = lambda other: f'insecure_domains = ["{other}"]\n' if mode == "external" else ""
        peers_file = Path(tempfile.mkdtemp(prefix="tributary-s2s-peers-")) / "peers"
        roots.append(peers_file.parent)
        peers_file.write_text("")
        a = new("a.test", f'\n[xmpp.s2s]\npeers_file = "{peers_file}"\n' + insecure("b.test"))

        def start_b() -> DomainBroker:
            b = new("b.test", f'\n[xmpp.s2s]\npeers = {{ "a.test" = "127.0.0.1:{a.s2s_port}" }}\n'
                    + insecure("a.test"))
            peers_file.write_text(f"b.test 127.0.0.1:{b.s2s_port}\n")
            return b

        return a, start_b(), start_b

    yield make
    problems = []
    for b in made:
        problems += [f"{b.domain}: {p}" for p in b.stop()]
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            shutil.copy(b.log_path, tmp_path_factory.mktemp(f"s2s-{b.domain}") / "broker.log")
    for r in roots:
        shutil.rmtree(r, ignore_errors=True)
    if problems:
        pytest.fail("broker problems at teardown: " + "; ".join(problems), pytrace=False)


async def login(slix, broker: DomainBroker, user: str, pw: str) -> Slix:
    return await slix.new(broker, user, pw, "r", domain=broker.domain).start(presence=True, roster=True)


async def subscribe_both_ways(x: Slix, y: Slix):
    for p, q in ((x, y), (y, x)):
        p.c.send_presence_subscription(pto=q.bare)
        await q.next_presence(lambda s: s["type"] == "subscribe" and s["from"].bare == p.bare)
        q.c.send_presence(pto=p.bare, ptype="subscribed")
        await p.next_presence(lambda s: s["type"] == "subscribed" and s["from"].bare == q.bare)


def is_chat(text):
    return lambda m: m["type"] == "chat" and m["body"] == text


@pytest.mark.parametrize("mode", ["external", "dialback"])
async def test_subscription_presence_and_chat_across_servers(federation, slix, mode):
    a, b, _ = federation(mode)
    alice = await login(slix, a, "alice", add_users(a, "alice")["alice"])
    bob = await login(slix, b, "bob", add_users(b, "bob")["bob"])

    await subscribe_both_ways(alice, bob)
    # Each side now sees the other available (presence after approval, RFC 6121 §3.1.5).
    await alice.next_presence(lambda s: s["from"].bare == bob.bare and s["type"] == "available")
    await bob.next_presence(lambda s: s["from"].bare == alice.bare and s["type"] == "available")
    roster = await alice.fetch_roster()
    assert roster[bob.bare]["subscription"] == "both", roster
    roster = await bob.fetch_roster()
    assert roster[alice.bare]["subscription"] == "both", roster

    alice.c.send_message(mto=bob.bare, mbody="hello from a.test", mtype="chat")
    m = await bob.next_message(is_chat("hello from a.test"))
    assert m["from"].full == alice.jid
    bob.c.send_message(mto=alice.jid, mbody="hello from b.test", mtype="chat")
    m = await alice.next_message(is_chat("hello from b.test"))
    assert m["from"].full == bob.jid

    # Going offline reaches the remote contact.
    await bob.stop()
    await alice.next_presence(lambda s: s["from"].bare == bob.bare and s["type"] == "unavailable")

    # The stream from a.test to b.test was authenticated the way this run meant.
    method = "EXTERNAL" if mode == "external" else "dialback"
    line = a.wait_log(re.compile(r"XMPP outbound stream authenticated.*"), 1)
    assert line and method in line.group(0), f"{method} was not used:\n{a.log_text()[-3000:]}"


async def test_peer_down_bounces_then_comes_back(federation, slix):
    a, b, start_b = federation("external")
    alice = await login(slix, a, "alice", add_users(a, "alice")["alice"])
    bob = await login(slix, b, "bob", add_users(b, "bob")["bob"])
    alice.c.send_message(mto=bob.bare, mbody="first", mtype="chat")
    await bob.next_message(is_chat("first"))
    await bob.stop()

    # B goes away: A's stream to it ends; the next message cannot be delivered and comes back
    # to alice as a stanza error (RFC 6120 §8.3.3.15).
    b.stopped_by_test = True
    assert not b.stop(), "b did not stop cleanly"
    alice.c.send_message(mto="bob@b.test", mbody="while b is down", mtype="chat")
    err = await alice.next_message(lambda m: m["type"] == "error")
    assert err["error"]["condition"] == "remote-server-not-found", err
    assert err["body"] == "while b is down"

    # B comes back (a new instance; A's peers file now points at it): the next message opens a
    # new stream and is delivered.
    b2 = start_b()
    bob2 = await login(slix, b2, "bob", add_users(b2, "bob")["bob"])
    alice.c.send_message(mto=bob2.bare, mbody="b is back", mtype="chat")
    await bob2.next_message(is_chat("b is back"))
    bob2.c.send_message(mto=alice.jid, mbody="and answers", mtype="chat")
    await alice.next_message(is_chat("and answers"))
