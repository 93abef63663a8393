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

from prosody_support import TinyDns
from xmpp_support import WAIT, Slix, SlixPool, XmppBroker, add_users, skip_unless_tributary

pytestmark = [skip_unless_tributary, pytest.mark.asyncio]

S2S_RE = re.compile(r"listening protocol=xmpp-server addr=127\.0\.0\.1:(\d+)")
S2S_TLS_RE = re.compile(r"listening protocol=xmpps-server addr=127\.0\.0\.1:(\d+)")


class DomainBroker(XmppBroker):
    """An XmppBroker serving `domain`, whose self-signed certificate is for that domain."""

    def __init__(self, root: Path, domain: str, extra: str):
        super().__init__(root, f'\n[xmpp]\ndomain = "{domain}"\n{extra}')
        self.domain = domain
        self.s2s_port = self.s2s_tls_port = 0
        self.ca_path: Path | None = None  # set when the broker has a CA-issued certificate

    def start(self):
        super().start()
        m = self.wait_log(S2S_RE)
        assert m, f"no s2s listener line:\n{self.log_text()[-3000:]}"
        self.s2s_port = int(m.group(1))
        m = self.wait_log(S2S_TLS_RE)
        assert m, f"no s2s direct TLS listener line:\n{self.log_text()[-3000:]}"
        self.s2s_tls_port = int(m.group(1))

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

    def make(mode: str, a_extra: str = "", dns: TinyDns | None = None):
        """dns: A finds B through this DNS server (SRV records set by the test) instead of
        its peers file."""
        insecure = lambda other: f'insecure_domains = ["{other}"]\n' if mode == "external" else ""
        peers_file = Path(tempfile.mkdtemp(prefix="tributary-s2s-peers-")) / "peers"
        roots.append(peers_file.parent)
        peers_file.write_text("")
        resolver = f'resolver = "127.0.0.1:{dns.port}"\n' if dns else ""
        a = new("a.test", f'\n[xmpp.s2s]\npeers_file = "{peers_file}"\n' + insecure("b.test")
                + resolver + a_extra)

        def start_b() -> DomainBroker:
            # A's services send on streams of their own, which B verifies by dialing them back.
            peers = ", ".join(f'"{d}" = "127.0.0.1:{a.s2s_port}"'
                              for d in ("a.test", "conference.a.test", "pubsub.a.test"))
            b = new("b.test", f'\n[xmpp.s2s]\npeers = {{ {peers} }}\n' + insecure("a.test"))
            if dns is None:
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


PLUGINS = ("xep_0004", "xep_0030", "xep_0045", "xep_0059", "xep_0060", "xep_0313")


async def login(slix, broker: DomainBroker, user: str, pw: str) -> Slix:
    return await slix.new(broker, user, pw, "r", domain=broker.domain,
                          plugins=PLUGINS).start(presence=True, roster=True)


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


def authenticated(broker, direction: str, domain: str) -> str:
    """The log line of the first `direction` ("inbound"/"outbound") stream authenticated for
    `domain`, waited for."""
    rx = re.compile(rf"XMPP {direction} stream authenticated.*domain=\"?{re.escape(domain)}\b.*")
    m = broker.wait_log(rx)
    assert m, f"no {direction} stream for {domain}:\n{broker.log_text()[-3000:]}"
    return m.group(0)


@pytest.mark.parametrize("srv", ["xmpps-server", "xmpp-server"])
async def test_dns_srv_finds_the_peer(federation, slix, srv):
    """A has no peers entry for b.test: it asks DNS (a test DNS server on loopback) for
    `_xmpps-server._tcp.b.test` and `_xmpp-server._tcp.b.test` (RFC 6120 §3.2, XEP-0368). With
    a direct TLS record the stream starts with TLS on B's 5270-style listener."""
    dns = TinyDns({})
    try:
        a, b, _ = federation("external", dns=dns)
        dns.records["b.test"] = b.s2s_port
        if srv == "xmpps-server":
            dns.tls_records["b.test"] = b.s2s_tls_port
        alice = await login(slix, a, "alice", add_users(a, "alice")["alice"])
        bob = await login(slix, b, "bob", add_users(b, "bob")["bob"])
        alice.c.send_message(mto=bob.bare, mbody="found by SRV", mtype="chat")
        await bob.next_message(is_chat("found by SRV"))
        direct = "true" if srv == "xmpps-server" else "false"
        assert f"direct_tls={direct}" in authenticated(a, "outbound", "b.test")
        assert f"direct_tls={direct}" in authenticated(b, "inbound", "a.test")
        asked = {name for name, qtype in dns.queries if qtype == 33}
        assert {"_xmpps-server._tcp.b.test", "_xmpp-server._tcp.b.test"} <= asked, dns.queries
    finally:
        dns.close()


@pytest.mark.parametrize("mode", ["external", "dialback"])
async def test_remote_user_in_our_room(federation, slix, mode):
    """bob@b.test joins a room on conference.a.test, talks and listens; alice sees him; an
    invitation goes to a b.test user; he leaves."""
    from test_xmpp_muc_invite import create, muc

    a, b, _ = federation(mode)
    alice = await login(slix, a, "alice", add_users(a, "alice")["alice"])
    pw = add_users(b, "bob", "dave")
    bob = await login(slix, b, "bob", pw["bob"])
    dave = await login(slix, b, "dave", pw["dave"])
    dave.on("groupchat_invite")
    room = "lounge@conference.a.test"
    await create(alice, room, "Alice")
    alice.on(f"muc::{room}::presence")  # slixmpp's xep_0045 takes the room's presence

    async def alice_sees(nick: str, ptype: str):
        while True:
            p = await alice.event(f"muc::{room}::presence")
            if p["from"] == f"{room}/{nick}" and p["type"] == ptype:
                return p

    pres, *_ = await muc(bob).join_muc_wait(room, "Bob", timeout=WAIT)
    assert 110 in {int(c) for c in pres["muc"]["status_codes"]}, str(pres)
    await alice_sees("Bob", "available")

    bob.c.send_message(mto=room, mbody="hello room from b", mtype="groupchat")
    m = await alice.next_message(lambda m: m["type"] == "groupchat" and m["body"] == "hello room from b")
    assert m["from"] == f"{room}/Bob"
    await bob.next_message(lambda m: m["type"] == "groupchat" and m["body"] == "hello room from b")
    alice.c.send_message(mto=room, mbody="hello b from the room", mtype="groupchat")
    m = await bob.next_message(lambda m: m["type"] == "groupchat" and m["body"] == "hello b from the room")
    assert m["from"] == f"{room}/Alice"

    muc(alice).invite(room, dave.bare, reason="come over")
    inv = await dave.event("groupchat_invite")
    assert inv["from"] == room and inv["muc"]["invite"]["from"] == alice.bare, str(inv)

    muc(bob).leave_muc(room, "Bob")
    await alice_sees("Bob", "unavailable")
    assert "conference.a.test" in authenticated(a, "outbound", "b.test")


async def test_remote_pubsub_subscriber_pep_contact_and_iqs(federation, slix):
    """bob@b.test subscribes to a node of pubsub.a.test and gets its notifications; as alice's
    contact he gets her PEP notifications; his disco#info to her account is answered."""
    from test_xmpp_pubsub import entry, event_items

    a, b, _ = federation("external")
    alice = await login(slix, a, "alice", add_users(a, "alice")["alice"])
    bob = await login(slix, b, "bob", add_users(b, "bob")["bob"])
    bob.on("pubsub_publish")
    svc = "pubsub.a.test"
    ps = alice.c.plugin["xep_0060"]
    await ps.create_node(svc, "news", timeout=WAIT)
    res = await bob.c.plugin["xep_0060"].subscribe(svc, "news", timeout=WAIT)
    assert res["pubsub"]["subscription"]["subscription"] == "subscribed", str(res)
    await ps.publish(svc, "news", id="n1", payload=entry("across servers"), timeout=WAIT)
    msg = await bob.event("pubsub_publish")
    assert msg["from"] == svc and event_items(msg) == ("news", ["n1"]), str(msg)

    await subscribe_both_ways(alice, bob)
    await ps.publish(None, "urn:example:status", id="s1", payload=entry("pep across"), timeout=WAIT)
    msg = await bob.event("pubsub_publish")
    assert msg["from"] == alice.bare and event_items(msg) == ("urn:example:status", ["s1"]), str(msg)

    info = await bob.c.plugin["xep_0030"].get_info(jid=alice.bare, timeout=WAIT)
    assert info["type"] == "result", str(info)


async def test_chats_across_servers_are_archived_on_both_sides(federation, slix):
    a, b, _ = federation("external")
    alice = await login(slix, a, "alice", add_users(a, "alice")["alice"])
    bob = await login(slix, b, "bob", add_users(b, "bob")["bob"])
    alice.c.send_message(mto=bob.bare, mbody="one", mtype="chat")
    await bob.next_message(is_chat("one"))
    bob.c.send_message(mto=alice.bare, mbody="two", mtype="chat")
    await alice.next_message(is_chat("two"))
    for me, other in ((alice, bob), (bob, alice)):
        res = await me.c.plugin["xep_0313"].retrieve(with_jid=other.bare, timeout=WAIT)
        bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in res["mam"]["results"]]
        assert bodies == ["one", "two"], (me.bare, bodies)


async def test_idle_stream_closes_and_reopens(federation, slix):
    a, b, _ = federation("external", a_extra="idle_timeout = 1\n")
    alice = await login(slix, a, "alice", add_users(a, "alice")["alice"])
    bob = await login(slix, b, "bob", add_users(b, "bob")["bob"])
    mark = a.log_mark()
    alice.c.send_message(mto=bob.bare, mbody="before idle", mtype="chat")
    await bob.next_message(is_chat("before idle"))
    closed = re.compile(r"XMPP outbound stream closed.*domain=\"?b\.test")
    assert a.wait_log(closed, start=mark), a.log_text()[-3000:]
    mark = a.log_mark()
    alice.c.send_message(mto=bob.bare, mbody="after idle", mtype="chat")
    await bob.next_message(is_chat("after idle"))
    assert a.wait_log(re.compile(r"XMPP outbound stream authenticated.*b\.test"), start=mark)


async def test_peer_down_bounces_then_comes_back(federation, slix, tmp_path):
    """B runs on a data dir it keeps across a stop and a start (durability_support's
    RestartableBroker, each run on new ports: A's peers file follows). Stanzas sent while B is
    down bounce with <remote-server-not-found/> (docs/xmpp.md: nothing is queued for a peer
    that cannot be reached); once B is back, a new stream carries chat both ways."""
    from xmpp_support import restartable_xmpp_broker_class
    from conftest import CONFIG

    a, _b, _ = federation("external")
    base = restartable_xmpp_broker_class()

    class RestartableB(base):
        domain = "b.test"

        def start(self):
            run = super().start()
            m = run.wait_for(S2S_RE, 30)
            assert m, run.text()[-3000:]
            self.s2s_port = int(m.group(1))
            return run

        @property
        def cert_path(self) -> Path:
            return self.data_dir / "xmpp" / "b.test.crt"

    peers_file = Path(re.search(r'peers_file = "([^"]+)"', a.config_path.read_text()).group(1))
    b = RestartableB(tmp_path / "b")
    peers = ", ".join(f'"{d}" = "127.0.0.1:{a.s2s_port}"' for d in ("a.test", "conference.a.test"))
    b.config_path.write_text(CONFIG + f'\n[xmpp]\ndomain = "b.test"\n[xmpp.s2s]\npeers = {{ {peers} }}\n'
                             'insecure_domains = ["a.test"]\n')
    try:
        b.start()
        peers_file.write_text(f"b.test 127.0.0.1:{b.s2s_port}\n")
        alice = await login(slix, a, "alice", add_users(a, "alice")["alice"])
        bob_pw = add_users(b, "bob")["bob"]
        bob = await login(slix, b, "bob", bob_pw)
        alice.c.send_message(mto=bob.bare, mbody="first", mtype="chat")
        await bob.next_message(is_chat("first"))
        await bob.stop()

        mark = a.log_mark()
        b.terminate()
        # A's stream to B ends with B; the next message cannot be delivered and comes back to
        # alice as a stanza error (RFC 6120 §8.3.3.15).
        assert a.wait_log(re.compile(r"XMPP outbound stream closed.*b\.test"), start=mark)
        alice.c.send_message(mto="bob@b.test", mbody="while b is down", mtype="chat")
        err = await alice.next_message(lambda m: m["type"] == "error")
        assert err["error"]["condition"] == "remote-server-not-found", err
        assert err["body"] == "while b is down"

        # B comes back on its data dir (bob's account is still there) on new ports.
        b.start()
        peers_file.write_text(f"b.test 127.0.0.1:{b.s2s_port}\n")
        bob2 = await login(slix, b, "bob", bob_pw)
        alice.c.send_message(mto=bob2.bare, mbody="b is back", mtype="chat")
        await bob2.next_message(is_chat("b is back"))
        bob2.c.send_message(mto=alice.jid, mbody="and answers", mtype="chat")
        await alice.next_message(is_chat("and answers"))
    finally:
        problems = b.finish()
        assert not problems, problems
