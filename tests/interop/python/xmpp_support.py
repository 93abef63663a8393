"""Support for the XMPP interop tests (test_xmpp*.py): a broker whose XMPP ports are read back
from its log, a broker that can be restarted on the same data dir, a raw-socket XMPP client
that speaks just enough of RFC 6120 for exact, deterministic exchanges (stream header, STARTTLS,
SASL PLAIN and SCRAM with or without channel binding, bind, XEP-0198), and a thin wrapper
around slixmpp's ClientXMPP whose every wait is bounded.

Conventions (docs/TESTING-CONTRACT.md, conftest.py): every test starts its own broker with
every listener on 127.0.0.1:0, its own data dir, ports read back from the log
(`listening protocol=xmpp|xmpps|http addr=...`), SIGTERM at teardown (exit 0, no panic).
Clients connect to 127.0.0.1 only and trust the self-signed certificate the broker generates
for its domain at <data_dir>/xmpp/localhost.crt (hostname checking on: it is for "localhost").
Tributary only: these tests need our binary, its log and its data dir.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import pytest

from conftest import LISTEN_RE, START_TIMEOUT, TARGET, TributaryBroker

DOMAIN = "localhost"
WAIT = 10.0  # upper bound for any single awaited event

NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SM = "urn:xmpp:sm:3"
NS_CLIENT = "jabber:client"
NS_ROSTER = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"

XMPP_RE = re.compile(r"listening protocol=xmpp addr=127\.0\.0\.1:(\d+)")
XMPPS_RE = re.compile(r"listening protocol=xmpps addr=127\.0\.0\.1:(\d+)")
HTTP_RE = re.compile(r"listening protocol=http addr=127\.0\.0\.1:(\d+)")

skip_unless_tributary = pytest.mark.skipif(
    TARGET[0] != "tributary", reason="XMPP: Tributary only (needs its listeners, CLI and data dir)"
)


def q(ns: str, name: str) -> str:
    """Clark notation, as ElementTree spells qualified names."""
    return f"{{{ns}}}{name}"


# ---------------------------------------------------------------------------------------------
# Brokers


class XmppBroker(TributaryBroker):
    """conftest's TributaryBroker, whose log lines can be awaited (a condition variable, no
    polling), with the XMPP, XMPPS and HTTP ports read back from the log."""

    def __init__(self, root: Path, extra_config: str = ""):
        super().__init__(root)
        self.extra_config = extra_config
        self._cond = threading.Condition(self._log_lock)
        self.xmpp_port = self.xmpps_port = self.http_port = 0

    def _drain(self):  # conftest's, plus a notification per line
        assert self.proc and self.proc.stdout
        with open(self.log_path, "w", encoding="utf-8") as out:
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace")
                out.write(line)
                out.flush()
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
                if self._addr is None:
                    m = LISTEN_RE.search(line)
                    if m:
                        self._addr = m.group(1)
                        self._listening.set()
        with self._cond:
            self._cond.notify_all()

    def wait_log(self, rx: re.Pattern, timeout: float = WAIT, start: int = 0) -> re.Match | None:
        """First match of `rx` in the log lines from index `start` on, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    if m := rx.search(line):
                        return m
                seen = max(seen, len(self._lines))
                left = deadline - time.monotonic()
                if left <= 0 or (self._reader is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.5))

    def log_mark(self) -> int:
        with self._cond:
            return len(self._lines)

    def start(self):
        super().start()
        ports = []
        for rx in (XMPP_RE, XMPPS_RE, HTTP_RE):
            m = self.wait_log(rx, START_TIMEOUT)
            assert m, f"no `{rx.pattern}` line in the log:\n{self.log_text()[-5000:]}"
            ports.append(int(m.group(1)))
        self.xmpp_port, self.xmpps_port, self.http_port = ports

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "xmpp" / f"{DOMAIN}.crt"


def restartable_xmpp_broker_class():
    from durability_support import RestartableBroker

    class RestartableXmppBroker(RestartableBroker):
        """durability_support's RestartableBroker; each run's XMPP ports are read back."""

        def start(self):
            run = super().start()
            ports = []
            for rx in (XMPP_RE, XMPPS_RE, HTTP_RE):
                m = run.wait_for(rx, START_TIMEOUT)
                assert m, f"run {run.index}: no `{rx.pattern}` line:\n{run.text()[-5000:]}"
                ports.append(int(m.group(1)))
            self.xmpp_port, self.xmpps_port, self.http_port = ports
            return run

        @property
        def cert_path(self) -> Path:
            return self.data_dir / "xmpp" / f"{DOMAIN}.crt"

    return RestartableXmppBroker


def _teardown_problems(b: XmppBroker, request, tmp_path_factory) -> list[str]:
    problems = b.stop()
    rep = getattr(request.node, "rep_call", None)
    if problems or (rep is not None and rep.failed):
        shutil.copy(b.log_path, tmp_path_factory.mktemp("xmpp-broker-log") / "broker.log")
    return problems


@pytest.fixture
def xmpp_factory(request, tmp_path_factory):
    """xmpp_factory(extra_config="") -> a started XmppBroker (own dir, all ports 0). Every broker
    started is stopped at teardown and checked (clean SIGTERM exit, no death, no panic)."""
    if TARGET[0] != "tributary":
        pytest.skip("XMPP tests need the Tributary binary")
    made: list[tuple[XmppBroker, Path]] = []

    def make(extra_config: str = "") -> XmppBroker:
        root = Path(tempfile.mkdtemp(prefix="tributary-xmpp-"))
        b = XmppBroker(root, extra_config)
        made.append((b, root))
        b.start()
        return b

    yield make
    problems = []
    for b, root in made:
        problems += _teardown_problems(b, request, tmp_path_factory)
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        pytest.fail("broker problems at teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def xb(xmpp_factory):
    """A started XmppBroker with the default [xmpp] configuration."""
    return xmpp_factory()


@pytest.fixture
def xmpp_restartable(request, tmp_path_factory):
    """A RestartableXmppBroker (stop/kill and start again on the same data dir)."""
    if TARGET[0] != "tributary":
        pytest.skip("XMPP tests need the Tributary binary")
    root = Path(tempfile.mkdtemp(prefix="tributary-xmpp-restart-"))
    b = restartable_xmpp_broker_class()(root)
    try:
        b.start()
        yield b
    finally:
        problems = b.finish()
        rep = getattr(request.node, "rep_call", None)
        if problems or (rep is not None and rep.failed):
            dest = tmp_path_factory.mktemp("xmpp-broker-logs")
            for r in b.runs:
                shutil.copy(r.log_path, dest / r.log_path.name)
        shutil.rmtree(root, ignore_errors=True)
        if problems:
            pytest.fail("broker problems at teardown: " + "; ".join(problems)
                        + f"\nlog:\n{b.log_text()[-20000:]}", pytrace=False)


def add_users(b, *names: str) -> dict[str, str]:
    """Creates accounts with the CLI (`tributary user add NAME PASSWORD --data-dir DIR`);
    returns name -> password."""
    out = {}
    for n in names:
        pw = f"pw-{n}-{uuid.uuid4().hex[:8]}"
        b.add_user(n, pw)
        out[n] = pw
    return out


def tls_context(cert_path: Path) -> ssl.SSLContext:
    """Verifies the broker's self-signed certificate, hostname "localhost" included."""
    ctx = ssl.create_default_context(cafile=str(cert_path))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# ---------------------------------------------------------------------------------------------
# Raw client


class StreamClosed(Exception):
    """The server ended the stream (`error` holds its stream error condition, if any)."""

    def __init__(self, error: str | None, text: str | None = None, raw: str = ""):
        super().__init__(f"stream closed by the server (error={error!r}, text={text!r}); got: {raw[-2000:]}")
        self.error = error
        self.text = text


class RawXmpp:
    """A blocking raw-socket XMPP client for exact exchanges. Every read is bounded by a
    deadline. Top-level elements arrive as ElementTree elements (Clark names); a stream
    error raises StreamClosed with its condition."""

    def __init__(self, port: int, *, direct_tls: bool = False, cert_path: Path | None = None,
                 timeout: float = WAIT):
        self.timeout = timeout
        self.cert_path = cert_path
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if direct_tls:
            assert cert_path is not None
            self.sock = tls_context(cert_path).wrap_socket(self.sock, server_hostname=DOMAIN)
        self.transcript: list[str] = []  # "C: ..." / "S: ..." for failure messages
        self.backlog: list[ET.Element] = []
        self.header: dict[str, str] | None = None
        self.closed = False
        self.stream_error: str | None = None
        self.jid: str | None = None
        self._reset_parser()

    # -- plumbing ------------------------------------------------------------------------
    def _reset_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root: ET.Element | None = None
        self._ready: list[ET.Element] = []
        self.header = None

    def send(self, data: str | bytes):
        raw = data.encode() if isinstance(data, str) else data
        self.transcript.append("C: " + raw.decode("utf-8", "replace")[:3000])
        self.sock.sendall(raw)

    def log(self) -> str:
        return "\n".join(self.transcript)[-6000:]

    def _feed(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out waiting for the server; exchange so far:\n{self.log()}")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"timed out waiting for the server; exchange so far:\n{self.log()}") from None
        except (ConnectionResetError, ssl.SSLError, OSError) as e:
            self.closed = True
            raise StreamClosed(self.stream_error, None, self.log() + f"\n[{e!r}]") from None
        if not data:
            self.closed = True
            raise StreamClosed(self.stream_error, None, self.log() + "\n[EOF]")
        self.transcript.append("S: " + data.decode("utf-8", "replace")[:3000])
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                if self.depth == 0:
                    self.root = el
                    self.header = dict(el.attrib)
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    self._ready.append(el)
                    assert self.root is not None
                    self.root.remove(el)
                elif self.depth == 0:
                    self._ready.append(ET.Element("__end__"))

    def next(self, timeout: float | None = None) -> ET.Element:
        """The next top-level element (backlog first)."""
        if self.backlog:
            return self.backlog.pop(0)
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self._ready:
            self._feed(deadline)
        el = self._ready.pop(0)
        if el.tag == q(NS_STREAM, "error"):
            cond = next((c.tag.split("}")[1] for c in el if c.tag.startswith(f"{{{NS_STREAM_ERRORS}}}")
                         and not c.tag.endswith("}text")), None)
            text = el.findtext(q(NS_STREAM_ERRORS, "text"))
            self.stream_error = cond
            raise StreamClosed(cond, text, self.log())
        if el.tag == "__end__":
            self.closed = True
            raise StreamClosed(self.stream_error, None, self.log())
        return el

    def wait_for(self, match: Callable[[ET.Element], bool], what: str, timeout: float | None = None) -> ET.Element:
        """The first element (backlog included) for which `match` holds; the others are kept
        in the backlog, in order."""
        for i, el in enumerate(self.backlog):
            if match(el):
                return self.backlog.pop(i)
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        skipped = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out waiting for {what}; exchange:\n{self.log()}")
                while not self._ready:
                    self._feed(deadline)
                el = self.next(left)
                if match(el):
                    return el
                skipped.append(el)
        finally:
            self.backlog.extend(skipped)

    def expect_stream_error(self, timeout: float | None = None) -> StreamClosed:
        """Reads until the server ends the stream; returns the StreamClosed (with .error)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            left = deadline - time.monotonic()
            try:
                self.next(max(left, 0.001))
            except StreamClosed as e:
                return e
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stream was not closed; exchange:\n{self.log()}")

    def wait_closed(self, timeout: float | None = None) -> bool:
        """After a stream error: True once the server closes the TCP connection (EOF)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (OSError, ssl.SSLError):
                return True
            if not data:
                return True
            self.transcript.append("S: " + data.decode("utf-8", "replace")[:3000])
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Drop the TCP connection at once, with a RST (no </stream:stream>, no TLS close)."""
        raw = self.sock
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- stream ----------------------------------------------------------------------------
    def open(self, to: str = DOMAIN, header: str | None = None) -> ET.Element:
        """Sends a stream header; returns the stream features element."""
        self._reset_parser()
        self.send(header if header is not None else
                  f"<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xml:lang='en' "
                  f"xmlns='jabber:client' xmlns:stream='{NS_STREAM}'>")
        features = self.next()
        assert features.tag == q(NS_STREAM, "features"), f"expected features, got {features.tag}\n{self.log()}"
        return features

    def starttls(self) -> ET.Element:
        assert self.cert_path is not None
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        proceed = self.next()
        assert proceed.tag == q(NS_TLS, "proceed"), f"{proceed.tag}\n{self.log()}"
        self.sock = tls_context(self.cert_path).wrap_socket(self.sock, server_hostname=DOMAIN)
        self.transcript.append(f"[TLS established: {self.sock.version()}]")
        return self.open()

    @staticmethod
    def mechanisms(features: ET.Element) -> list[str]:
        mechs = features.find(q(NS_SASL, "mechanisms"))
        return [] if mechs is None else [m.text or "" for m in mechs.findall(q(NS_SASL, "mechanism"))]

    def auth_plain(self, user: str, password: str) -> ET.Element:
        """<auth mechanism='PLAIN'>; returns <success/> or <failure/>."""
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        return self.next()

    def auth_scram(self, user: str, password: str, hash_name: str = "sha256",
                   cb_type: str | None = None, cb_data: bytes | None = None) -> ET.Element:
        """A full SCRAM exchange (RFC 5802/7677), with channel binding (`-PLUS`) when
        `cb_type` is given. Returns <success/> (after checking the server signature) or
        <failure/>."""
        mech = {"sha1": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256"}[hash_name] + ("-PLUS" if cb_type else "")
        gs2 = (f"p={cb_type},," if cb_type else "n,,").encode()
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user},r={cnonce}".encode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{base64.b64encode(gs2 + first_bare).decode()}</auth>")
        ch = self.next()
        if ch.tag != q(NS_SASL, "challenge"):
            return ch
        server_first = base64.b64decode(ch.text or "")
        attrs = dict(kv.split(b"=", 1) for kv in server_first.split(b","))
        nonce, salt, iters = attrs[b"r"], base64.b64decode(attrs[b"s"]), int(attrs[b"i"])
        assert nonce.startswith(cnonce.encode()), "server nonce must extend the client nonce"
        cbind = base64.b64encode(gs2 + (cb_data or b""))
        final_wo_proof = b"c=" + cbind + b",r=" + nonce
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iters)
        client_key = hmac.new(salted, b"Client Key", hash_name).digest()
        stored = hashlib.new(hash_name, client_key).digest()
        auth_msg = first_bare + b"," + server_first + b"," + final_wo_proof
        sig = hmac.new(stored, auth_msg, hash_name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = hmac.new(salted, b"Server Key", hash_name).digest()
        server_sig = hmac.new(server_key, auth_msg, hash_name).digest()
        final = final_wo_proof + b",p=" + base64.b64encode(proof)
        self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final).decode()}</response>")
        res = self.next()
        if res.tag == q(NS_SASL, "success"):
            data = base64.b64decode(res.text or "")
            assert data == b"v=" + base64.b64encode(server_sig), \
                f"server signature mismatch: {data!r} (mutual authentication failed)"
        return res

    def tls_server_end_point(self) -> bytes:
        """RFC 5929 §4.1: the hash of the server certificate (SHA-256 for SHA-256 signatures)."""
        der = self.sock.getpeercert(binary_form=True)
        return hashlib.sha256(der).digest()

    def bind(self, resource: str | None = None) -> str:
        res = f"<resource>{resource}</resource>" if resource else ""
        iid = "bind-" + uuid.uuid4().hex[:6]
        self.send(f"<iq type='set' id='{iid}'><bind xmlns='{NS_BIND}'>{res}</bind></iq>")
        reply = self.wait_for(lambda e: e.get("id") == iid, "the bind result")
        assert reply.get("type") == "result", f"bind failed:\n{self.log()}"
        jid = reply.findtext(f"{q(NS_BIND, 'bind')}/{q(NS_BIND, 'jid')}")
        assert jid, f"no <jid/> in the bind result:\n{self.log()}"
        self.jid = jid
        return jid

    def login(self, user: str, password: str, resource: str | None = None, *, tls: bool = False,
              bind: bool = True) -> ET.Element:
        """Stream, (STARTTLS,) SASL PLAIN (allowed in the clear on loopback), restart, (bind).
        Returns the post-authentication features."""
        features = self.open()
        if tls:
            features = self.starttls()
        res = self.auth_plain(user, password)
        assert res.tag == q(NS_SASL, "success"), f"PLAIN login of {user} failed:\n{self.log()}"
        features = self.open()
        if bind:
            self.bind(resource)
        return features

    def iq(self, type_: str, payload: str, to: str | None = None, timeout: float | None = None) -> ET.Element:
        iid = "iq-" + uuid.uuid4().hex[:8]
        to_attr = f" to='{to}'" if to else ""
        self.send(f"<iq type='{type_}' id='{iid}'{to_attr}>{payload}</iq>")
        return self.wait_for(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("id") == iid
                             and e.get("type") in ("result", "error"), f"the reply to iq {iid}", timeout)


def stanza_error(el: ET.Element) -> tuple[str | None, str | None]:
    """(type, condition) of a stanza's <error/>, or (None, None)."""
    err = el.find(q(NS_CLIENT, "error"))
    if err is None:
        return None, None
    cond = next((c.tag.split("}")[1] for c in err if c.tag.startswith(f"{{{NS_STANZAS}}}")
                 and not c.tag.endswith("}text")), None)
    return err.get("type"), cond


def is_msg(body: str | None = None) -> Callable[[ET.Element], bool]:
    def match(el):
        return el.tag == q(NS_CLIENT, "message") and (body is None or el.findtext(q(NS_CLIENT, "body")) == body)
    return match


# ---------------------------------------------------------------------------------------------
# slixmpp


class Slix:
    """A slixmpp ClientXMPP connected to 127.0.0.1 with bounded waits. Incoming messages,
    presences, roster pushes and IQ errors land in asyncio queues. Nothing is automatic that
    a test might want to observe: subscription requests are neither accepted nor answered,
    no presence or roster request is sent at session start unless asked for."""

    def __init__(self, broker, user: str, password: str, resource: str | None = None, *,
                 mech: str | None = None, direct_tls: bool = False, plugins: tuple[str, ...] = (),
                 domain: str = DOMAIN):
        import slixmpp

        jid = f"{user}@{domain}" + (f"/{resource}" if resource else "")
        self.broker = broker
        self.port = broker.xmpps_port if direct_tls else broker.xmpp_port
        c = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
        c.enable_direct_tls = direct_tls
        c.enable_starttls = not direct_tls
        c.enable_plaintext = False
        c.ca_certs = Path(broker.cert_path)
        c.use_aiodns = False
        c.use_ipv6 = False
        c.whitespace_keepalive = False
        for p in plugins:
            c.register_plugin(p)
        c.roster.auto_authorize = None  # neither accept nor refuse subscription requests
        c.roster.auto_subscribe = False
        self.c = c
        self.messages = Inbox(f"message for {jid}")
        self.presences = Inbox(f"presence for {jid}")
        self.roster_pushes = Inbox(f"roster push for {jid}")
        self.auth_failures: list = []
        self.events: dict[str, asyncio.Queue] = {}
        c.add_event_handler("message", self.messages.put)
        c.add_event_handler("presence", self.presences.put)  # every presence (p["type"] is the
        # type attribute, or the <show/> value for an available presence with one)
        # roster_update also fires for the result of get_roster(): keep only pushes (sets).
        c.add_event_handler("roster_update", lambda iq: iq["type"] == "set" and self.roster_pushes.put(iq))
        c.add_event_handler("failed_auth", self.auth_failures.append)
        for ev in ("session_start", "failed_all_auth", "disconnected", "session_resumed", "sm_enabled",
                   "sm_failed", "stream_error", "connection_failed", "carbon_received", "carbon_sent",
                   "session_end", "auth_success"):
            self.on(ev)

    def on(self, event: str) -> asyncio.Queue:
        if event not in self.events:
            qq: asyncio.Queue = asyncio.Queue()
            self.events[event] = qq
            self.c.add_event_handler(event, qq.put_nowait)
        return self.events[event]

    async def event(self, name: str, timeout: float = WAIT):
        try:
            return await asyncio.wait_for(self.events[name].get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.c.boundjid}: no {name!r} event within {timeout}s") from None

    @property
    def jid(self) -> str:
        return str(self.c.boundjid.full)

    @property
    def bare(self) -> str:
        return str(self.c.boundjid.bare)

    def connect(self):
        self.c.connect("127.0.0.1", self.port)

    async def start(self, presence: bool = False, priority: int | None = None, roster: bool = False,
                    timeout: float = WAIT) -> "Slix":
        """Connects and waits for session_start (fails at once if authentication fails)."""
        self.connect()
        started = asyncio.ensure_future(self.events["session_start"].get())
        failed = asyncio.ensure_future(self.events["failed_all_auth"].get())
        done, pending = await asyncio.wait({started, failed}, timeout=timeout,
                                           return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            p.cancel()
        if started not in done:
            self.abort()
            why = "authentication failed" if failed in done else f"no session within {timeout}s"
            raise AssertionError(f"{self.c.requested_jid}: {why}; auth failures: "
                                 f"{[str(f) for f in self.auth_failures]}")
        if roster:
            await asyncio.wait_for(self.c.get_roster(), timeout)
        if presence:
            self.c.send_presence(ppriority=priority)
        return self

    async def next_message(self, match: Callable | None = None, timeout: float = WAIT):
        return await self.messages.get(match, timeout)

    async def next_presence(self, match: Callable | None = None, timeout: float = WAIT):
        return await self.presences.get(match, timeout)

    async def next_roster_push(self, timeout: float = WAIT):
        return await self.roster_pushes.get(None, timeout)

    async def fetch_roster(self, timeout: float = WAIT) -> dict:
        """The whole roster from the server (a roster get without 'ver', so never the empty
        "unchanged" answer of RFC 6121 §2.6.3): jid -> item."""
        iq = self.c.make_iq_get()
        iq.enable("roster")
        res = await iq.send(timeout=timeout)
        return dict(res["roster"]["items"])

    def abort(self):
        self.c.cancel_connection_attempt()
        self.c.abort()

    async def stop(self, timeout: float = 5):
        """Closes the stream and waits (bounded) for the disconnection."""
        self.c.cancel_connection_attempt()
        if self.c.transport is None:
            return
        try:
            await asyncio.wait_for(self.c.disconnect(wait=2), timeout)
        except (asyncio.TimeoutError, Exception):
            self.c.abort()


class Inbox:
    """What a client received, oldest first. `get(match)` takes the first item for which
    `match` holds (waiting, bounded, for one to arrive); the others stay, in order, so a
    later `get()` without a match sees exactly what came and was not taken yet."""

    def __init__(self, what: str):
        self.what = what
        self.items: list = []
        self._arrived = asyncio.Event()

    def put(self, item):
        self.items.append(item)
        self._arrived.set()

    def empty(self) -> bool:
        return not self.items

    async def get(self, match: Callable | None = None, timeout: float = WAIT):
        deadline = time.monotonic() + timeout
        while True:
            for i, item in enumerate(self.items):
                if match is None or match(item):
                    return self.items.pop(i)
            self._arrived.clear()
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                raise AssertionError(f"no matching {self.what} within {timeout}s; unmatched: "
                                     f"{[str(s)[:300] for s in self.items]}") from None


class SlixPool:
    """Creates Slix clients and stops them all at the end of the test."""

    def __init__(self):
        self.clients: list[Slix] = []

    def new(self, *args, **kw) -> Slix:
        s = Slix(*args, **kw)
        self.clients.append(s)
        return s

    async def close(self):
        await asyncio.gather(*(s.stop() for s in self.clients), return_exceptions=True)
