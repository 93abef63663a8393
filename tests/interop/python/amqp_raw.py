"""A tiny raw-socket AMQP 0-9-1 client (frames via pamqp) for what pika and aio-pika
hide: protocol-header negotiation, heartbeat timing, server-generated consumer tags,
exact publisher-confirm delivery tags and frame ordering."""

from __future__ import annotations

import socket
import struct
import time

from pamqp import body as pbody
from pamqp import commands, frame, header, heartbeat

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE


class Closed(Exception):
    """The server closed the TCP connection."""


class RawAMQP:
    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.tune: commands.Connection.Tune | None = None
        self.start: commands.Connection.Start | None = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- bytes -------------------------------------------------------------------
    def send_bytes(self, data: bytes):
        self.sock.sendall(data)

    def send(self, value, channel: int = 0):
        self.sock.sendall(frame.marshal(value, channel))

    def _fill(self, deadline: float):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from server in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from server in time") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def recv_exact(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_until_eof(self, timeout: float) -> bytes:
        """All bytes until the server closes; TimeoutError if it doesn't in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline)
            except Closed:
                data, self.buf = self.buf, b""
                return data

    # -- frames ------------------------------------------------------------------
    def recv_frame(self, timeout: float = 5.0):
        """(channel, frame) — raises Closed on EOF, TimeoutError on silence."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 7:
            self._fill(deadline)
        _, _, size = struct.unpack(">BHI", self.buf[:7])
        while len(self.buf) < 8 + size:
            self._fill(deadline)
        raw, self.buf = self.buf[: 8 + size], self.buf[8 + size :]
        assert raw[-1] == FRAME_END, f"bad frame end byte {raw[-1]:#x}"
        _, channel, value = frame.unmarshal(raw)
        return channel, value

    def expect(self, cls, timeout: float = 5.0, skip_heartbeats: bool = True):
        deadline = time.monotonic() + timeout
        while True:
            channel, value = self.recv_frame(max(0.001, deadline - time.monotonic()))
            if skip_heartbeats and isinstance(value, heartbeat.Heartbeat):
                continue
            assert isinstance(value, cls), f"expected {cls.__name__}, got {value!r} on channel {channel}"
            return value

    # -- conversations -------------------------------------------------------------
    def handshake(self, user="guest", password="guest", vhost="/", heartbeat_s=0,
                  frame_max=131072, channel_max=2047, capabilities=None):
        self.send_bytes(PROTOCOL_HEADER)
        self.start = self.expect(commands.Connection.Start)
        caps = {"publisher_confirms": True, "consumer_cancel_notify": True,
                "basic.nack": True, "exchange_exchange_bindings": True,
                "connection.blocked": True, "authentication_failure_close": True}
        caps.update(capabilities or {})
        self.send(commands.Connection.StartOk(
            client_properties={"product": "tributary-raw-test", "capabilities": caps},
            mechanism="PLAIN", response=f"\0{user}\0{password}", locale="en_US"))
        self.tune = self.expect(commands.Connection.Tune)
        self.send(commands.Connection.TuneOk(channel_max=channel_max, frame_max=frame_max,
                                             heartbeat=heartbeat_s))
        self.send(commands.Connection.Open(virtual_host=vhost))
        self.expect(commands.Connection.OpenOk)
        return self.tune

    def open_channel(self, n: int = 1):
        self.send(commands.Channel.Open(), n)
        self.expect(commands.Channel.OpenOk)

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes = b"",
                mandatory: bool = False, properties: commands.Basic.Properties | None = None):
        data = frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                    mandatory=mandatory), channel)
        data += frame.marshal(header.ContentHeader(0, len(body), properties or commands.Basic.Properties()), channel)
        if body:
            data += frame.marshal(pbody.ContentBody(body), channel)
        self.send_bytes(data)

    def connection_close(self):
        self.send(commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        return self.expect(commands.Connection.CloseOk)
