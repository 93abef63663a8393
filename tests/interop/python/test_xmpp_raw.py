"""XMPP exchanges that need exact bytes on the wire (xmpp_support.RawXmpp, a raw-socket
client): stream features at each stage, SCRAM-*-PLUS with tls-server-end-point channel
binding and the downgrade check, three failed authentications, malformed XML and limits
(stream errors, and the server keeps serving others), XEP-0198 stream resumption after a
dropped TCP connection and its timeout, roster versioning, and in-band registration.
Tributary only. Every read has a deadline."""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from xmpp_support import (DOMAIN, NS_BIND, NS_CLIENT, NS_ROSTER, NS_SASL, NS_SASL_CB, NS_SM,
                          NS_STREAM, NS_TLS, RawXmpp, StreamClosed, add_users, is_msg, q,
                          skip_unless_tributary, stanza_error, xb, xmpp_factory)  # noqa: F401

pytestmark = skip_unless_tributary

HEADER = (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' xmlns='jabber:client' "
          f"xmlns:stream='{NS_STREAM}'>")


def login_second_client(b, user="guest", password="guest"):
    """The server still serves: a fresh client logs in and gets a ping answered."""
    with RawXmpp(b.xmpp_port) as c:
        c.login(user, password, "after")
        res = c.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)
        assert res.get("type") == "result", c.log()


# ---------------------------------------------------------------------------------------------
# Stream header and features


def test_stream_header_and_features_at_each_stage(xb):
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port, cert_path=xb.cert_path) as c:
        f = c.open()
        h = c.header
        assert h.get("from") == DOMAIN and h.get("version") == "1.0" and h.get("id"), h
        # Cleartext on loopback: STARTTLS offered but not required, no -PLUS without TLS,
        # PLAIN allowed (loopback exemption).
        starttls = f.find(q(NS_TLS, "starttls"))
        assert starttls is not None, c.log()
        assert starttls.find(q(NS_TLS, "required")) is None, "TLS must not be required on loopback"
        assert c.mechanisms(f) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"], c.log()
        f = c.starttls()
        assert f.find(q(NS_TLS, "starttls")) is None, "STARTTLS offered twice"
        assert set(c.mechanisms(f)) == {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                                        "SCRAM-SHA-1", "PLAIN"}, c.log()
        cb = f.find(q(NS_SASL_CB, "sasl-channel-binding"))
        assert cb is not None, "XEP-0440 channel-binding types not advertised"
        types = {e.get("type") for e in cb.findall(q(NS_SASL_CB, "channel-binding"))}
        assert {"tls-exporter", "tls-server-end-point"} <= types, types

        res = c.auth_scram("alice", pw, "sha256")
        assert res.tag == q(NS_SASL, "success"), c.log()
        f = c.open()
        for ns, name in ((NS_BIND, "bind"), (NS_SM, "sm"), ("urn:xmpp:csi:0", "csi"),
                         ("urn:xmpp:features:rosterver", "ver"), ("urn:xmpp:features:pre-approval", "sub")):
            assert f.find(q(ns, name)) is not None, f"{name} missing from post-auth features:\n{c.log()}"
        assert f.find(q(NS_SASL, "mechanisms")) is None, "SASL offered again after authentication"
        jid = c.bind("r1")
        assert jid == f"alice@{DOMAIN}/r1"


def test_stream_restarts_get_new_stream_ids(xb):
    """RFC 6120 §4.3.3: on a stream restart (after STARTTLS, after SASL) the receiving entity
    MUST generate a new stream ID instead of re-using the old one."""
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port, cert_path=xb.cert_path) as c:
        c.open()
        ids = [c.header.get("id")]
        c.starttls()
        ids.append(c.header.get("id"))
        assert c.auth_scram("alice", pw, "sha256").tag == q(NS_SASL, "success"), c.log()
        c.open()
        ids.append(c.header.get("id"))
        assert all(ids) and len(set(ids)) == 3, f"stream ids (initial, after TLS, after SASL): {ids}"


def test_wrong_to_domain_is_host_unknown(xb):
    with RawXmpp(xb.xmpp_port) as c:
        c.send(HEADER.replace(f"to='{DOMAIN}'", "to='example.org'"))
        err = c.expect_stream_error()
        assert err.error == "host-unknown", c.log()  # RFC 6120 §4.9.3.6
    login_second_client(xb)


def test_stanza_before_authentication_is_rejected(xb):
    with RawXmpp(xb.xmpp_port) as c:
        c.open()
        c.send(f"<message to='guest@{DOMAIN}'><body>sneaky</body></message>")
        err = c.expect_stream_error()
        assert err.error == "not-authorized", c.log()  # RFC 6120 §4.9.3.12


# ---------------------------------------------------------------------------------------------
# SASL


@pytest.mark.parametrize("hash_name", ["sha256", "sha1"])
@pytest.mark.parametrize("transport", ["starttls", "direct-tls"])
def test_scram_plus_tls_server_end_point(xb, hash_name, transport):
    pw = add_users(xb, "alice")["alice"]
    direct = transport == "direct-tls"
    with RawXmpp(xb.xmpps_port if direct else xb.xmpp_port, direct_tls=direct, cert_path=xb.cert_path) as c:
        f = c.open() if direct else (c.open(), c.starttls())[1]
        assert f.find(q(NS_TLS, "starttls")) is None
        mech = {"sha256": "SCRAM-SHA-256-PLUS", "sha1": "SCRAM-SHA-1-PLUS"}[hash_name]
        assert mech in c.mechanisms(f), c.log()
        res = c.auth_scram("alice", pw, hash_name, cb_type="tls-server-end-point", cb_data=c.tls_server_end_point())
        assert res.tag == q(NS_SASL, "success"), c.log()
        c.open()
        assert c.bind("plus") == f"alice@{DOMAIN}/plus"


def test_scram_plus_with_wrong_channel_binding_fails(xb):
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port, cert_path=xb.cert_path) as c:
        c.open()
        c.starttls()
        # The right password, but the hash of some other certificate: a man in the middle.
        res = c.auth_scram("alice", pw, "sha256", cb_type="tls-server-end-point", cb_data=b"\x00" * 32)
        assert res.tag == q(NS_SASL, "failure"), c.log()
        assert res.find(q(NS_SASL, "not-authorized")) is not None, c.log()


def test_scram_y_flag_when_server_offers_plus_fails(xb):
    """RFC 5802 §6: a client that supports channel binding but thinks the server does not
    sends 'y'; a server that does support it MUST then fail the authentication (downgrade)."""
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port, cert_path=xb.cert_path) as c:
        c.open()
        c.starttls()
        gs2 = b"y,,"
        cnonce = "abcdefghijklmnop"
        first = gs2 + f"n=alice,r={cnonce}".encode()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{base64.b64encode(first).decode()}</auth>")
        res = c.next()
        if res.tag == q(NS_SASL, "challenge"):
            # Some servers fail only at the final message: finish with a correct proof.
            server_first = base64.b64decode(res.text or "")
            res = _scram_finish(c, "alice", pw, "sha256", gs2, f"n=alice,r={cnonce}".encode(), server_first)
        assert res.tag == q(NS_SASL, "failure"), f"'y' accepted although the server offers -PLUS:\n{c.log()}"


def _scram_finish(c, user, password, hash_name, gs2, first_bare, server_first):
    import hashlib
    import hmac

    attrs = dict(kv.split(b"=", 1) for kv in server_first.split(b","))
    nonce, salt, iters = attrs[b"r"], base64.b64decode(attrs[b"s"]), int(attrs[b"i"])
    final_wo = b"c=" + base64.b64encode(gs2) + b",r=" + nonce
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iters)
    ck = hmac.new(salted, b"Client Key", hash_name).digest()
    sig = hmac.new(hashlib.new(hash_name, ck).digest(), first_bare + b"," + server_first + b"," + final_wo,
                   hash_name).digest()
    proof = bytes(a ^ b for a, b in zip(ck, sig))
    c.send(f"<response xmlns='{NS_SASL}'>"
           f"{base64.b64encode(final_wo + b',p=' + base64.b64encode(proof)).decode()}</response>")
    return c.next()


@pytest.mark.parametrize("hash_name", ["sha256", "sha1"])
def test_scram_without_tls_on_loopback(xb, hash_name):
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port) as c:
        c.open()
        res = c.auth_scram("alice", pw, hash_name)
        assert res.tag == q(NS_SASL, "success"), c.log()


def test_three_failed_authentications_close_the_stream(xb):
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port) as c:
        c.open()
        for attempt in (1, 2, 3):
            t0 = time.monotonic()
            res = c.auth_plain("alice", f"wrong-{attempt}")
            took = time.monotonic() - t0
            assert res.tag == q(NS_SASL, "failure"), c.log()
            assert res.find(q(NS_SASL, "not-authorized")) is not None, c.log()
            assert took >= 0.5, f"failure {attempt} came after {took:.3f}s: failures must be slowed down"
        # RFC 6120 §6.4.5: after the retries, <policy-violation/> and the stream is closed.
        err = c.expect_stream_error()
        assert err.error == "policy-violation", c.log()
        assert c.wait_closed(), "the TCP connection stays open after the stream error"
    # The account is not locked: the right password works on a new stream.
    with RawXmpp(xb.xmpp_port) as c:
        c.login("alice", pw, "ok")


def test_unknown_user_looks_like_a_wrong_password(xb):
    """SCRAM for an account that does not exist gets a (fake) challenge, then <not-authorized/>:
    nothing tells it apart from a wrong password (no account enumeration)."""
    with RawXmpp(xb.xmpp_port) as c:
        c.open()
        res = c.auth_scram(f"nobody-{uuid.uuid4().hex[:6]}", "whatever", "sha256")
        assert res.tag == q(NS_SASL, "failure") and res.find(q(NS_SASL, "not-authorized")) is not None, c.log()
        assert any("<challenge" in line for line in c.transcript if line.startswith("S: ")), \
            f"no challenge for an unknown user (enumeration):\n{c.log()}"


def test_unknown_mechanism_is_invalid_mechanism(xb):
    with RawXmpp(xb.xmpp_port) as c:
        c.open()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='DIGEST-MD5'/>")
        res = c.next()
        assert res.tag == q(NS_SASL, "failure") and res.find(q(NS_SASL, "invalid-mechanism")) is not None, c.log()


# ---------------------------------------------------------------------------------------------
# Malformed XML and limits: exact stream error, and the server goes on serving others


MALFORMED = {
    "mismatched-tag": (None, "<message><body>x</message>", "not-well-formed"),
    "undeclared-entity": (None, "<message><body>&custom;</body></message>", "not-well-formed"),
    "invalid-utf8": (None, b"<message><body>\xff\xfe</body></message>", "not-well-formed"),
    "unbound-prefix": (None, "<foo:message><body>x</body></foo:message>", "not-well-formed"),
    "comment": (None, "<!-- a comment -->", "restricted-xml"),
    "processing-instruction": (None, "<?evil data?>", "restricted-xml"),
    "dtd-before-stream": ("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
                          "<!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]>" + HEADER[len("<?xml version='1.0'?>"):],
                          None, "restricted-xml"),
    "dtd-inside-stream": (None, "<!DOCTYPE x [<!ENTITY a 'b'>]>", "restricted-xml"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_xml_stream_error(xb, case):
    header, payload, expected = MALFORMED[case]
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port) as c:
        if header is not None:
            c.send(header)
        else:
            c.login("alice", pw, "bad")
            c.send(payload)
        err = c.expect_stream_error()
        assert err.error == expected, f"expected <{expected}/>, got <{err.error}/>:\n{c.log()}"
        assert c.wait_closed(), "connection not closed after the stream error"
    login_second_client(xb, "alice", pw)


def _nested(depth: int) -> str:
    """A message whose innermost element is at `depth` counted from the stanza (depth 1)."""
    inner = depth - 1
    return ("<message to='{to}'><body>nest</body>" + "<x xmlns='urn:example:n'>" * inner
            + "</x>" * inner + "</message>")


@pytest.mark.parametrize("limit", ["depth", "attributes", "stanza-size"])
def test_limits_policy_violation(xmpp_factory, limit):
    b = xmpp_factory("[xmpp]\nmax_stanza_size = 10000\n")
    pw = add_users(b, "alice")["alice"]
    with RawXmpp(b.xmpp_port) as c:
        c.login("alice", pw, "lim")
        me = c.jid
        if limit == "depth":  # at the limit (32) accepted, one more is not
            ok, bad = _nested(32).format(to=me), _nested(33).format(to=me)
        elif limit == "attributes":  # 64 attributes per start tag (namespace declarations count)
            attrs = lambda n: " ".join(f"a{i}='v'" for i in range(n))  # noqa: E731
            ok = f"<message to='{me}' {attrs(62)}><body>nest</body></message>"  # to + 62 = 63
            bad = f"<message to='{me}' {attrs(200)}><body>x</body></message>"
        else:  # 10000 bytes per stanza
            ok = f"<message to='{me}'><body>nest{'a' * 9000}</body></message>"
            bad = f"<message to='{me}'><body>{'a' * 12000}</body></message>"
        c.send(ok)
        m = c.wait_for(is_msg(), "the message at the limit, echoed to ourselves")
        assert (m.findtext(q(NS_CLIENT, "body")) or "").startswith("nest")
        c.send(bad)
        err = c.expect_stream_error()
        assert err.error == "policy-violation", c.log()
        assert c.wait_closed()
    login_second_client(b, "alice", pw)


def test_malformed_client_does_not_disturb_an_established_session(xb):
    pw = add_users(xb, "alice", "bob")
    with RawXmpp(xb.xmpp_port) as alice, RawXmpp(xb.xmpp_port) as bob, RawXmpp(xb.xmpp_port) as evil:
        alice.login("alice", pw["alice"], "a")
        bob.login("bob", pw["bob"], "b")
        evil.open()
        evil.send("<<<>>>")
        assert evil.expect_stream_error().error == "not-well-formed", evil.log()
        alice.send(f"<message to='{bob.jid}' type='chat'><body>still here</body></message>")
        m = bob.wait_for(is_msg("still here"), "alice's message")
        assert m.get("from") == alice.jid


# ---------------------------------------------------------------------------------------------
# Stream management (XEP-0198)


def _enable_sm(c: RawXmpp) -> tuple[str, str | None]:
    c.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    en = c.wait_for(lambda e: e.tag in (q(NS_SM, "enabled"), q(NS_SM, "failed")), "<enabled/>")
    assert en.tag == q(NS_SM, "enabled"), c.log()
    assert en.get("resume") in ("true", "1"), f"resumption not granted:\n{c.log()}"
    assert en.get("id"), c.log()
    return en.get("id"), en.get("max")


def test_sm_resume_after_dropped_tcp_resends_unacked(xb):
    pw = add_users(xb, "alice", "bob")
    with RawXmpp(xb.xmpp_port) as bob:
        bob.login("bob", pw["bob"], "b")
        a = RawXmpp(xb.xmpp_port)
        a.login("alice", pw["alice"], "a")
        full = a.jid
        smid, _max = _enable_sm(a)
        bob.send(f"<message to='{full}' type='chat' id='m1'><body>unacked-1</body></message>")
        a.wait_for(is_msg("unacked-1"), "the first message")
        a.abort()  # TCP reset: neither <a/> nor </stream:stream>

        bob.send(f"<message to='{full}' type='chat' id='m2'><body>unacked-2</body></message>")
        ping = bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)
        assert ping.get("type") == "result"

        with RawXmpp(xb.xmpp_port) as a2:
            a2.login("alice", pw["alice"], bind=False)
            a2.send(f"<resume xmlns='{NS_SM}' previd='{smid}' h='0'/>")
            r = a2.next()
            assert r.tag == q(NS_SM, "resumed"), f"resumption failed:\n{a2.log()}"
            assert r.get("previd") == smid
            # Everything since <enabled/> that alice did not acknowledge comes again, in order.
            m = a2.wait_for(is_msg(), "the re-sent message")
            assert m.findtext(q(NS_CLIENT, "body")) == "unacked-1", a2.log()
            m = a2.wait_for(is_msg(), "the message sent while detached")
            assert m.findtext(q(NS_CLIENT, "body")) == "unacked-2", a2.log()
            assert m.get("to") == full, "the resumed session must keep its full JID"
            # The resumed session routes both ways under the old JID.
            a2.send(f"<message to='{bob.jid}' type='chat'><body>back</body></message>")
            m = bob.wait_for(is_msg("back"), "alice's message after resumption")
            assert m.get("from") == full
            # An <r/> is answered with the count of stanzas handled by the server from alice:
            # nothing was counted on the new stream yet besides that message (h counts from
            # <enable/> over the whole session: 1).
            a2.send(f"<r xmlns='{NS_SM}'/>")
            ack = a2.wait_for(lambda e: e.tag == q(NS_SM, "a"), "<a/>")
            assert ack.get("h") == "1", a2.log()


def test_sm_resume_with_unknown_id_fails_and_binding_still_works(xb):
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port) as c:
        c.login("alice", pw, bind=False)
        c.send(f"<resume xmlns='{NS_SM}' previd='no-such-session' h='0'/>")
        r = c.next()
        assert r.tag == q(NS_SM, "failed"), c.log()
        assert r.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None, c.log()
        assert c.bind("fresh") == f"alice@{DOMAIN}/fresh"


def test_sm_resume_of_someone_elses_session_fails(xb):
    pw = add_users(xb, "alice", "mallory")
    a = RawXmpp(xb.xmpp_port)
    a.login("alice", pw["alice"], "a")
    smid, _ = _enable_sm(a)
    a.abort()
    with RawXmpp(xb.xmpp_port) as m:
        m.login("mallory", pw["mallory"], bind=False)
        m.send(f"<resume xmlns='{NS_SM}' previd='{smid}' h='0'/>")
        r = m.next()
        assert r.tag == q(NS_SM, "failed"), f"mallory resumed alice's session!\n{m.log()}"


def test_sm_resumption_timeout_ends_session_and_keeps_unacked(xmpp_factory):
    b = xmpp_factory("[xmpp]\nresumption_timeout = 1\n")
    pw = add_users(b, "alice", "bob")
    with RawXmpp(b.xmpp_port) as bob:
        bob.login("bob", pw["bob"], "b")
        a = RawXmpp(b.xmpp_port)
        a.login("alice", pw["alice"], "a")
        # bob subscribes to alice's presence, so the end of her session is visible to him.
        bob.send("<presence/>")
        a.send("<presence/>")
        bob.send(f"<presence to='alice@{DOMAIN}' type='subscribe'/>")
        a.wait_for(lambda e: e.get("type") == "subscribe", "the subscription request")
        a.send(f"<presence to='bob@{DOMAIN}' type='subscribed'/>")
        bob.wait_for(lambda e: e.get("type") == "subscribed", "subscribed")
        bob.wait_for(lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("from") == a.jid and e.get("type") is None,
                     "alice's presence")
        smid, max_ = _enable_sm(a)
        if max_ is not None:
            assert int(max_) <= 1, f"max='{max_}' exceeds the configured resumption_timeout"
        bob.send(f"<message to='alice@{DOMAIN}' type='chat'><body>never-acked</body></message>")
        a.wait_for(is_msg("never-acked"), "the message")
        t0 = time.monotonic()
        a.abort()
        # While resumable, no unavailable; once the timeout passes, bob sees alice go.
        p = bob.wait_for(lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("type") == "unavailable",
                         "alice's unavailable presence after the resumption timeout", timeout=10)
        assert p.get("from").startswith(f"alice@{DOMAIN}/")
        assert time.monotonic() - t0 >= 0.8, "unavailable sent before the resumption timeout"
        with RawXmpp(b.xmpp_port) as a2:
            a2.login("alice", pw["alice"], bind=False)
            a2.send(f"<resume xmlns='{NS_SM}' previd='{smid}' h='0'/>")
            r = a2.next()
            assert r.tag == q(NS_SM, "failed"), f"resumed after the timeout:\n{a2.log()}"
            a2.bind("new")
            # XEP-0198 §5: the unacknowledged message was not lost with the session.
            a2.send("<presence/>")
            m = a2.wait_for(is_msg("never-acked"), "the unacknowledged message, kept for alice")
            assert m.get("type") == "chat"


# ---------------------------------------------------------------------------------------------
# Roster versioning (RFC 6121 §2.6) and in-band registration (XEP-0077)


def test_roster_versioning(xb):
    pw = add_users(xb, "alice")["alice"]
    with RawXmpp(xb.xmpp_port) as c:
        c.login("alice", pw, "v")
        r = c.iq("get", f"<query xmlns='{NS_ROSTER}' ver=''/>")
        v1 = r.find(q(NS_ROSTER, "query")).get("ver")
        assert v1, f"no ver in the roster result although the client asked with ver='':\n{c.log()}"
        c.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='bob@{DOMAIN}' name='B'/></query>")
        push = c.wait_for(lambda e: e.get("type") == "set" and e.find(q(NS_ROSTER, "query")) is not None,
                          "the roster push")
        v2 = push.find(q(NS_ROSTER, "query")).get("ver")
        assert v2 and v2 != v1, f"push without a new ver:\n{c.log()}"
        # Current version: an empty result (§2.6.3).
        r = c.iq("get", f"<query xmlns='{NS_ROSTER}' ver='{v2}'/>")
        assert r.get("type") == "result" and (r.find(q(NS_ROSTER, "query")) is None
                                              or len(r.find(q(NS_ROSTER, "query"))) == 0), c.log()
        # Old version: the full roster with the new ver, or an empty result and pushes.
        r = c.iq("get", f"<query xmlns='{NS_ROSTER}' ver='{v1}'/>")
        query = r.find(q(NS_ROSTER, "query"))
        if query is not None:
            assert query.get("ver") == v2 and [i.get("jid") for i in query] == [f"bob@{DOMAIN}"], c.log()
        else:
            push = c.wait_for(lambda e: e.get("type") == "set" and e.find(q(NS_ROSTER, "query")) is not None,
                              "the interim push")
            assert push.find(q(NS_ROSTER, "query")).get("ver") == v2


def test_in_band_registration(xmpp_factory):
    b = xmpp_factory("[xmpp]\nregistration = true\n")
    name = f"newbie{uuid.uuid4().hex[:6]}"
    with RawXmpp(b.xmpp_port) as c:
        f = c.open()
        assert f.find("{http://jabber.org/features/iq-register}register") is not None, c.log()
        r = c.iq("get", "<query xmlns='jabber:iq:register'/>")
        assert r.get("type") == "result" and r.find(".//{jabber:iq:register}username") is not None, c.log()
        r = c.iq("set", f"<query xmlns='jabber:iq:register'><username>{name}</username>"
                        "<password>s3cret</password></query>")
        assert r.get("type") == "result", c.log()
        # The same name again: <conflict/> (XEP-0077 §3.1).
        r = c.iq("set", f"<query xmlns='jabber:iq:register'><username>{name}</username>"
                        "<password>other</password></query>")
        assert stanza_error(r)[1] == "conflict", c.log()
    with RawXmpp(b.xmpp_port) as c:
        c.open()
        assert c.auth_scram(name, "s3cret", "sha256").tag == q(NS_SASL, "success"), c.log()


def test_registration_off_by_default(xb):
    with RawXmpp(xb.xmpp_port) as c:
        f = c.open()
        assert f.find("{http://jabber.org/features/iq-register}register") is None, c.log()
        try:  # an IQ error, or (a stanza before authentication) a <not-authorized/> stream error
            r = c.iq("set", "<query xmlns='jabber:iq:register'><username>intruder</username>"
                            "<password>pw</password></query>")
            assert r.get("type") == "error", c.log()
        except StreamClosed as e:
            assert e.error == "not-authorized", c.log()
    with RawXmpp(xb.xmpp_port) as c:  # and no account was made
        c.open()
        res = c.auth_plain("intruder", "pw")
        assert res.tag == q(NS_SASL, "failure"), c.log()
