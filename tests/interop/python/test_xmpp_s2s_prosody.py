"""XMPP federation between Tributary (tributary.interop) and Prosody (prosody.interop, Debian's package started by
the test with its own config): a Tributary user and a Prosody user subscribe to each other and
chat both ways, once with Server Dialback (Prosody's `s2s_secure_auth = false`; each server dials
the other back) and once with certificates from a throwaway CA on both sides (SASL EXTERNAL,
`s2s_secure_auth = true`). See prosody_support.py for how ports and DNS are handled without
guessing and without touching the system resolver.
"""

from __future__ import annotations

import os

import re
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio

from prosody_support import Prosody, TinyDns, prosody_available
from test_xmpp_s2s import DomainBroker, is_chat, subscribe_both_ways
from xmpp_support import SlixPool, add_users, skip_unless_tributary

# Not under .test: libunbound answers NXDOMAIN for the special-use `test.` zone itself.
A, B = "tributary.interop", "prosody.interop"

pytestmark = [
    skip_unless_tributary,
    pytest.mark.asyncio,
    # In CI (.ci/run installs them) a missing Prosody is a failure, never a skip.
    pytest.mark.skipif(not prosody_available() and not os.environ.get("CI"),
                       reason="prosody is not installed (apt-get install prosody lua-unbound)"),
]


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def pair(request, tmp_path_factory):
    """make(mode) -> (tributary, prosody, ca_path); mode "dialback" or "certificates"."""
    cleanup = []

    def make(mode: str):
        import trustme

        root = Path(tempfile.mkdtemp(prefix="tributary-prosody-"))
        cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
        ca = trustme.CA()
        ca_path = root / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        certs = {}
        for domain in (A, B):
            # Our MUC service streams as its own domain: its name is in our certificate too.
            names = (domain, f"conference.{domain}") if domain == A else (domain,)
            issued = ca.issue_cert(*names)
            crt, key = root / f"{domain}.crt", root / f"{domain}.key"
            issued.cert_chain_pems[0].write_to_path(str(crt))
            issued.private_key_pem.write_to_path(str(key))
            certs[domain] = (crt, key)
        dns = TinyDns({})
        cleanup.append(dns.close)
        secure = mode == "certificates"
        pro_root = root / "prosody"
        pro_root.mkdir()
        pro = Prosody(pro_root, B, *certs[B], dns.port, secure_auth=secure,
                      ca_file=ca_path if secure else None)
        extra = f'\n[xmpp.s2s]\npeers = {{ "{B}" = "127.0.0.1:{pro.s2s_port}" }}\n'
        if secure:
            crt, key = certs[A]
            extra = (f'certificate = "{crt}"\nkey = "{key}"\n' + extra
                     + f'ca_certificates = "{ca_path}"\ndialback = false\n')
        t = DomainBroker(root / "tributary", A, extra)
        if secure:
            t.ca_path = ca_path
        t.start()

        def stop_t():
            problems = t.stop()
            rep = getattr(request.node, "rep_call", None)
            if problems or (rep is not None and rep.failed):
                dest = tmp_path_factory.mktemp("s2s-prosody-logs")
                shutil.copy(t.log_path, dest / "tributary.log")
                if pro.log_path.exists():
                    shutil.copy(pro.log_path, dest / "prosody.log")
            assert not problems, problems

        cleanup.append(stop_t)
        dns.records[A] = t.s2s_port
        dns.records[f"conference.{A}"] = t.s2s_port
        pro.start()
        cleanup.append(pro.stop)
        return t, pro, ca_path

    yield make
    for f in reversed(cleanup):
        f()


@pytest.mark.parametrize("mode", ["dialback", "certificates"])
async def test_tributary_and_prosody_users_subscribe_and_chat(pair, slix, mode):
    t, pro, ca_path = pair(mode)
    alice = await slix.new(t, "alice", add_users(t, "alice")["alice"], "r",
                           domain=A).start(presence=True, roster=True)
    pro.register("bob", "bob-secret")
    shim = SimpleNamespace(xmpp_port=pro.c2s_port, xmpps_port=0, cert_path=ca_path)
    bob = await slix.new(shim, "bob", "bob-secret", "r", domain=B).start(presence=True, roster=True)

    await subscribe_both_ways(alice, bob)
    await alice.next_presence(lambda s: s["from"].bare == bob.bare and s["type"] == "available")
    await bob.next_presence(lambda s: s["from"].bare == alice.bare and s["type"] == "available")
    assert (await alice.fetch_roster())[bob.bare]["subscription"] == "both"
    assert (await bob.fetch_roster())[alice.bare]["subscription"] == "both"

    alice.c.send_message(mto=bob.bare, mbody="hello Prosody", mtype="chat")
    m = await bob.next_message(is_chat("hello Prosody"))
    assert m["from"].full == alice.jid
    bob.c.send_message(mto=alice.jid, mbody="hello Tributary", mtype="chat")
    m = await alice.next_message(is_chat("hello Tributary"))
    assert m["from"].full == bob.jid

    method = "EXTERNAL" if mode == "certificates" else "dialback"
    line = t.wait_log(re.compile(r"XMPP outbound stream authenticated.*"), 1)
    assert line and method in line.group(0), t.log_text()[-3000:]
    line = t.wait_log(re.compile(r"XMPP inbound stream authenticated.*"), 1)
    assert line and method in line.group(0), t.log_text()[-3000:]


@pytest.mark.parametrize("mode", ["dialback", "certificates"])
async def test_prosody_user_in_our_room(pair, slix, mode):
    """A Prosody user joins a room of conference.tributary.interop (Prosody finds it by SRV and
    verifies it by dialback or its certificate), talks and listens; our user sees him."""
    from test_xmpp_muc_invite import create, muc

    t, pro, ca_path = pair(mode)
    plugins = ("xep_0004", "xep_0030", "xep_0045")
    alice = await slix.new(t, "alice", add_users(t, "alice")["alice"], "r", domain=A,
                           plugins=plugins).start(presence=True)
    pro.register("bob", "bob-secret")
    shim = SimpleNamespace(xmpp_port=pro.c2s_port, xmpps_port=0, cert_path=ca_path)
    bob = await slix.new(shim, "bob", "bob-secret", "r", domain=B, plugins=plugins).start(presence=True)
    room = f"lounge@conference.{A}"
    await create(alice, room, "Alice")
    alice.on(f"muc::{room}::presence")

    pres, *_ = await muc(bob).join_muc_wait(room, "Bob", timeout=30)
    assert 110 in {int(c) for c in pres["muc"]["status_codes"]}, str(pres)
    while True:
        p = await alice.event(f"muc::{room}::presence")
        if p["from"] == f"{room}/Bob":
            break
    bob.c.send_message(mto=room, mbody="hello from Prosody", mtype="groupchat")
    m = await alice.next_message(lambda m: m["type"] == "groupchat" and m["body"] == "hello from Prosody")
    assert m["from"] == f"{room}/Bob"
    alice.c.send_message(mto=room, mbody="hello Prosody user", mtype="groupchat")
    m = await bob.next_message(lambda m: m["type"] == "groupchat" and m["body"] == "hello Prosody user")
    assert m["from"] == f"{room}/Alice"
