"""SCRAM-SHA-256 and SCRAM-SHA-1 over AMQP 0-9-1's connection.secure / secure-ok rounds.

No AMQP 0-9-1 client library speaks SCRAM, so the client is pamqp frames on a raw socket
(amqp_raw.RawAMQP) and an RFC 5802 client from the standard library (scram_client). The
exchange: start-ok carries client-first-message, connection.secure server-first-message,
secure-ok client-final-message, connection.secure server-final-message (AMQP has no room for
it in connection.tune, RFC 4422 §3.6), an empty secure-ok, then connection.tune."""

from __future__ import annotations

import json
import os
import re

import pytest
from pamqp import commands

from amqp_raw import PROTOCOL_HEADER, RawAMQP
from scram_client import ScramClient

CAPS = {"authentication_failure_close": True}


def start(raw: RawAMQP, scram: ScramClient) -> commands.Connection.Secure:
    """Protocol header, start (SCRAM offered, PLAIN still first), start-ok with
    client-first-message; returns the server-first challenge."""
    raw.send_bytes(PROTOCOL_HEADER)
    st = raw.expect(commands.Connection.Start)
    mechanisms = st.mechanisms if isinstance(st.mechanisms, str) else st.mechanisms.decode()
    offered = mechanisms.split()
    assert offered[0] == "PLAIN", offered
    assert "SCRAM-SHA-256" in offered and "SCRAM-SHA-1" in offered, offered
    raw.send(commands.Connection.StartOk(
        client_properties={"product": "scram-test", "capabilities": CAPS},
        mechanism=scram.mechanism, response=scram.client_first().decode(), locale="en_US"))
    return raw.expect(commands.Connection.Secure)


def as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def expect_refused(raw: RawAMQP, mechanism: str):
    close = raw.expect(commands.Connection.Close, timeout=10)
    assert close.reply_code == 403, close
    assert close.reply_text == (
        f"ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. "
        "For details see the broker logfile."), close.reply_text
    raw.send(commands.Connection.CloseOk())


@pytest.mark.parametrize("hash_name", ["sha256", "sha1"])
def test_scram_login_opens_the_connection(broker, hash_name):
    broker.add_user("alice", "s3cret, with = signs")
    scram = ScramClient(hash_name, "alice", "s3cret, with = signs")
    with RawAMQP(broker.host, broker.port) as raw:
        challenge = start(raw, scram)
        raw.send(commands.Connection.SecureOk(
            response=scram.client_final(as_bytes(challenge.challenge)).decode()))
        final = raw.expect(commands.Connection.Secure)
        scram.verify_server_final(as_bytes(final.challenge))
        raw.send(commands.Connection.SecureOk(response=""))
        raw.expect(commands.Connection.Tune)
        raw.send(commands.Connection.TuneOk(channel_max=0, frame_max=131072, heartbeat=0))
        raw.send(commands.Connection.Open(virtual_host="/"))
        raw.expect(commands.Connection.OpenOk)
        raw.open_channel(1)
        raw.send(commands.Queue.Declare(queue="scram-q", exclusive=True), 1)
        raw.expect(commands.Queue.DeclareOk)
        raw.connection_close()
    assert re.search(r"AMQP connection opened.*user=\"?alice", broker.log_text()), broker.log_text()[-2000:]


def test_wrong_password_is_refused_with_403(broker):
    broker.add_user("alice", "right")
    scram = ScramClient("sha256", "alice", "wrong")
    with RawAMQP(broker.host, broker.port) as raw:
        challenge = start(raw, scram)
        raw.send(commands.Connection.SecureOk(
            response=scram.client_final(as_bytes(challenge.challenge)).decode()))
        expect_refused(raw, "SCRAM-SHA-256")
    log = broker.log_text()
    assert re.search(r"AMQP login refused.*peer=127\.0\.0\.1:\d+.*user=\"?alice.*SCRAM-SHA-256", log), log[-2000:]


def test_tampered_proof_is_refused(broker):
    broker.add_user("alice", "right")
    scram = ScramClient("sha1", "alice", "right")
    with RawAMQP(broker.host, broker.port) as raw:
        challenge = start(raw, scram)
        raw.send(commands.Connection.SecureOk(
            response=scram.client_final(as_bytes(challenge.challenge), tamper=True).decode()))
        expect_refused(raw, "SCRAM-SHA-1")


def test_unknown_user_runs_the_whole_exchange_and_is_refused(broker):
    scram = ScramClient("sha256", "nobody", "whatever")
    with RawAMQP(broker.host, broker.port) as raw:
        challenge = start(raw, scram)
        fields = dict(f.split("=", 1) for f in as_bytes(challenge.challenge).decode().split(","))
        assert int(fields["i"]) >= 4096 and fields["s"], fields  # looks like a real account
        raw.send(commands.Connection.SecureOk(
            response=scram.client_final(as_bytes(challenge.challenge)).decode()))
        expect_refused(raw, "SCRAM-SHA-256")


def test_user_without_scram_keys_is_refused_and_plain_still_works(broker):
    """An account whose users.json entry has no SCRAM keys (a password hash imported from
    RabbitMQ definitions): SCRAM fails at the proof, PLAIN logs in."""
    broker.add_user("legacy", "pw")
    path = broker.data_dir / "users.json"
    data = json.loads(path.read_text())
    users = data["users"] if isinstance(data, dict) else data
    for u in users:
        if u["name"] == "legacy":
            u.pop("scram_sha1", None)
            u.pop("scram_sha256", None)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # a new inode: the broker re-reads the file at the next login

    scram = ScramClient("sha256", "legacy", "pw")
    with RawAMQP(broker.host, broker.port) as raw:
        challenge = start(raw, scram)
        raw.send(commands.Connection.SecureOk(
            response=scram.client_final(as_bytes(challenge.challenge)).decode()))
        expect_refused(raw, "SCRAM-SHA-256")
    assert "has no SCRAM keys" in broker.log_text()
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake(user="legacy", password="pw")
        raw.connection_close()


def test_secure_ok_out_of_turn_is_a_504(broker):
    with RawAMQP(broker.host, broker.port) as raw:
        raw.send_bytes(PROTOCOL_HEADER)
        raw.expect(commands.Connection.Start)
        raw.send(commands.Connection.SecureOk(response="hello"))
        close = raw.expect(commands.Connection.Close)
        assert close.reply_code == 504, close
        assert "unexpected method in connection state starting" in close.reply_text
