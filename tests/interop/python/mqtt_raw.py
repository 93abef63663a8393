"""A tiny raw-socket MQTT 5 client for what paho hides: the exact packets on the wire
(PUBREL re-sent after CONNACK, Topic Alias properties, DUP re-sends with a chosen packet id,
a PUBREC with an error reason code, the server's DISCONNECT reason codes).

Encoding follows MQTT 5.0 chapter 2 (fixed header, Variable Byte Integer, properties) and
chapter 3 (one section per packet). Properties are dicts keyed by the names below;
User Property is a list of (key, value) pairs; Subscription Identifier a list of ints."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)
NAMES = {v: k for k, v in globals().items() if k.isupper() and isinstance(v, int)}

# id -> (name, kind); kind: byte, u16, u32, varint, str, bin, pair (MQTT 5 2.2.2.2)
PROPERTIES = {
    0x01: ("PayloadFormatIndicator", "byte"), 0x02: ("MessageExpiryInterval", "u32"),
    0x03: ("ContentType", "str"), 0x08: ("ResponseTopic", "str"), 0x09: ("CorrelationData", "bin"),
    0x0B: ("SubscriptionIdentifier", "varint"), 0x11: ("SessionExpiryInterval", "u32"),
    0x12: ("AssignedClientIdentifier", "str"), 0x13: ("ServerKeepAlive", "u16"),
    0x15: ("AuthenticationMethod", "str"), 0x16: ("AuthenticationData", "bin"),
    0x17: ("RequestProblemInformation", "byte"), 0x18: ("WillDelayInterval", "u32"),
    0x19: ("RequestResponseInformation", "byte"), 0x1A: ("ResponseInformation", "str"),
    0x1C: ("ServerReference", "str"), 0x1F: ("ReasonString", "str"), 0x21: ("ReceiveMaximum", "u16"),
    0x22: ("TopicAliasMaximum", "u16"), 0x23: ("TopicAlias", "u16"), 0x24: ("MaximumQoS", "byte"),
    0x25: ("RetainAvailable", "byte"), 0x26: ("UserProperty", "pair"), 0x27: ("MaximumPacketSize", "u32"),
    0x28: ("WildcardSubscriptionAvailable", "byte"), 0x29: ("SubscriptionIdentifierAvailable", "byte"),
    0x2A: ("SharedSubscriptionAvailable", "byte"),
}
PROPERTY_IDS = {name: (pid, kind) for pid, (name, kind) in PROPERTIES.items()}
REPEATABLE = {"UserProperty", "SubscriptionIdentifier"}


class Closed(Exception):
    """The server closed the TCP connection."""


# -- encoding ---------------------------------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def encode_properties(props: dict | None) -> bytes:
    body = bytearray()
    for name, value in (props or {}).items():
        pid, kind = PROPERTY_IDS[name]
        for v in value if name in REPEATABLE else [value]:
            body.append(pid)
            body += {
                "byte": lambda x: bytes([x]), "u16": lambda x: struct.pack("!H", x),
                "u32": lambda x: struct.pack("!I", x), "varint": varint, "str": utf8, "bin": utf8,
                "pair": lambda kv: utf8(kv[0]) + utf8(kv[1]),
            }[kind](v)
    return varint(len(body)) + bytes(body)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + varint(len(body)) + body


def connect_packet(client_id: str, clean_start: bool = True, keepalive: int = 60,
                   properties: dict | None = None, will: tuple | None = None) -> bytes:
    """will: (topic, payload, qos, retain[, will properties])."""
    flags = 0x02 if clean_start else 0
    tail = b""
    if will:
        topic, payload, qos, retain, *wprops = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        tail = encode_properties(wprops[0] if wprops else None) + utf8(topic) + utf8(payload)
    body = (utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive)
            + encode_properties(properties) + utf8(client_id) + tail)
    return packet(CONNECT, 0, body)


def publish_packet(topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None,
                   retain: bool = False, dup: bool = False, properties: dict | None = None) -> bytes:
    flags = (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    body = utf8(topic) + (struct.pack("!H", packet_id) if qos else b"")
    return packet(PUBLISH, flags, body + encode_properties(properties) + payload)


def ack_packet(kind: int, packet_id: int, reason: int = 0, properties: dict | None = None) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (PUBREL's fixed-header flags are 0b0010)."""
    body = struct.pack("!H", packet_id)
    if reason or properties:
        body += bytes([reason]) + encode_properties(properties)
    return packet(kind, 0x02 if kind == PUBREL else 0, body)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]], properties: dict | None = None) -> bytes:
    """filters: (filter, subscription options byte: QoS | No Local << 2 | ...)."""
    body = struct.pack("!H", packet_id) + encode_properties(properties)
    for f, options in filters:
        body += utf8(f) + bytes([options])
    return packet(SUBSCRIBE, 0x02, body)


def disconnect_packet(reason: int = 0, properties: dict | None = None) -> bytes:
    body = bytes([reason]) + encode_properties(properties) if (reason or properties) else b""
    return packet(DISCONNECT, 0, body)


# -- decoding ---------------------------------------------------------------------------
@dataclass
class Packet:
    kind: int
    flags: int
    size: int  # bytes on the wire, fixed header included
    packet_id: int | None = None
    reason: int = 0
    properties: dict = field(default_factory=dict)
    session_present: bool = False  # CONNACK
    topic: str = ""  # PUBLISH
    payload: bytes = b""
    reasons: list[int] = field(default_factory=list)  # SUBACK / UNSUBACK

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    def __repr__(self):
        extra = {k: v for k, v in vars(self).items() if k not in ("kind", "flags") and v not in (None, "", b"", [], {}, False)}
        return f"{NAMES.get(self.kind, self.kind)}(flags={self.flags:#x}, {extra})"


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "truncated packet"
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def varint(self) -> int:
        n, shift = 0, 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def bin(self) -> bytes:
        return self.take(self.u16())

    def str(self) -> str:
        return self.bin().decode()

    def pair(self) -> tuple[str, str]:
        return self.str(), self.str()

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def properties(self) -> dict:
        end = self.varint() + self.pos
        props: dict = {}
        while self.pos < end:
            pid = self.varint()
            assert pid in PROPERTIES, f"unknown property {pid:#x}"
            name, kind = PROPERTIES[pid]
            value = getattr(self, kind)()
            if name in REPEATABLE:
                props.setdefault(name, []).append(value)
            else:
                assert name not in props, f"property {name} twice"
                props[name] = value
        assert self.pos == end, "property length mismatch"
        return props


def decode(first: int, body: bytes, size: int) -> Packet:
    p = Packet(first >> 4, first & 0x0F, size)
    r = Reader(body)
    if p.kind == CONNACK:
        p.session_present = bool(r.byte() & 1)
        p.reason = r.byte()
        p.properties = r.properties()
    elif p.kind == PUBLISH:
        p.topic = r.str()
        if p.qos:
            p.packet_id = r.u16()
        p.properties = r.properties()
        p.payload = r.rest()
    elif p.kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.packet_id = r.u16()
        if len(body) > 2:
            p.reason = r.byte()
        if len(body) > 3:
            p.properties = r.properties()
    elif p.kind in (SUBACK, UNSUBACK):
        p.packet_id = r.u16()
        p.properties = r.properties()
        p.reasons = list(r.rest())
    elif p.kind in (DISCONNECT, AUTH):
        if body:
            p.reason = r.byte()
        if len(body) > 1:
            p.properties = r.properties()
    assert r.pos == len(body), f"trailing bytes in {p!r}"
    return p


# -- the client -------------------------------------------------------------------------
class RawMQTT:
    """One TCP connection; `recv()` returns the next decoded packet from the server."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 20.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.next_id = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline: float):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing from the server in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("nothing from the server in time") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def recv(self, timeout: float | None = None) -> Packet:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            # fixed header: type/flags byte, then the remaining length (1 to 4 bytes)
            if len(self.buf) >= 2:
                length, shift, i = 0, 0, 1
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not b & 0x80:
                        if len(self.buf) >= i + length:
                            first, body = self.buf[0], self.buf[i:i + length]
                            self.buf = self.buf[i + length:]
                            return decode(first, body, i + length)
                        break
            self._fill(deadline)

    def expect(self, kind: int, timeout: float | None = None) -> Packet:
        p = self.recv(timeout)
        assert p.kind == kind, f"expected {NAMES[kind]}, got {p!r}"
        return p

    def expect_closed(self, timeout: float | None = None):
        """Asserts that the server closes the connection (after nothing but `Closed`)."""
        try:
            p = self.recv(timeout)
        except Closed:
            return
        raise AssertionError(f"expected the connection to close, got {p!r}")

    # -- conveniences ----------------------------------------------------------------
    def connect(self, client_id: str, clean_start: bool = True, **kw) -> Packet:
        self.send(connect_packet(client_id, clean_start, **kw))
        ack = self.expect(CONNACK)
        assert ack.reason == 0, f"CONNECT refused: {ack!r}"
        return ack

    def packet_id(self) -> int:
        self.next_id = self.next_id % 0xFFFF + 1
        return self.next_id

    def subscribe(self, topic_filter: str, qos: int, properties: dict | None = None) -> list[int]:
        pid = self.packet_id()
        self.send(subscribe_packet(pid, [(topic_filter, qos)], properties))
        ack = self.expect(SUBACK)
        assert ack.packet_id == pid, ack
        return ack.reasons

    def publish(self, topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None, **kw):
        """Sends a PUBLISH (a fresh packet id for QoS > 0 unless given); returns the id."""
        if qos and packet_id is None:
            packet_id = self.packet_id()
        self.send(publish_packet(topic, payload, qos, packet_id, **kw))
        return packet_id

    def publish_qos2(self, topic: str, payload: bytes):
        """A complete QoS 2 exchange: PUBLISH, PUBREC, PUBREL, PUBCOMP."""
        pid = self.publish(topic, payload, 2)
        assert self.expect(PUBREC).packet_id == pid
        self.send(ack_packet(PUBREL, pid))
        assert self.expect(PUBCOMP).packet_id == pid

    def ack(self, kind: int, packet_id: int, reason: int = 0):
        self.send(ack_packet(kind, packet_id, reason))

    def ping(self):
        """PINGREQ; returns once PINGRESP arrives, failing on any other packet before it (the
        server answers in order, so this shows nothing else was sent in between)."""
        self.send(packet(PINGREQ, 0, b""))
        self.expect(PINGRESP)

    def disconnect(self, reason: int = 0, properties: dict | None = None):
        self.send(disconnect_packet(reason, properties))
