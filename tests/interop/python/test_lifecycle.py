"""Broker process lifecycle and the user CLI (Tributary only)."""

import base64
import signal
import time

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.tributary_only


def test_sigterm_closes_clients_with_320_and_exits_cleanly(broker):
    broker.require_tributary("sends SIGTERM to the broker")
    conn = broker.connect()
    ch = conn.channel()
    ch.queue_declare("", exclusive=True)
    other = broker.connect()
    broker.signal(signal.SIGTERM)
    for c in (conn, other):
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                c.process_data_events(time_limit=0.1)
            pytest.fail("no connection.close within 10 s of SIGTERM")
        assert ei.value.reply_code == 320, ei.value
        assert ei.value.reply_text.startswith("CONNECTION_FORCED"), ei.value.reply_text
    code = broker.wait_exit(10)
    assert code == 0, f"exit code after SIGTERM: {code}"


def test_user_added_with_cli_while_running_can_log_in(broker):
    broker.require_tributary("uses the tributary CLI")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        broker.connect(user="alice", password="wonderland-42")
    broker.add_user("alice", "wonderland-42")
    conn = broker.connect(user="alice", password="wonderland-42")
    try:
        ch = conn.channel()
        ch.queue_declare("", exclusive=True)
    finally:
        conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        broker.connect(user="alice", password="wrong-password")


def test_passwords_are_not_stored_in_plain_text(broker):
    broker.require_tributary("reads the data dir")
    user, password = "bob-the-plaintext-check", "Pl41nT3xt-Needle-7731"
    broker.add_user(user, password)
    conn = broker.connect(user=user, password=password)  # the user really exists
    conn.close()
    needles = {
        "plain": password.encode(),
        "utf-16": password.encode("utf-16-le"),
        "base64": base64.b64encode(password.encode()).rstrip(b"="),
        "hex": password.encode().hex().encode(),
    }
    files = [p for p in broker.data_dir.rglob("*") if p.is_file()]
    assert files, "no files in the data dir at all"
    user_seen = False
    for path in files:
        data = path.read_bytes()
        user_seen |= user.encode() in data
        for how, needle in needles.items():
            assert needle not in data, f"{path} holds the password ({how})"
    assert user_seen, "the user name is nowhere in the data dir: where is the user database?"
    assert password not in broker.log_text()
