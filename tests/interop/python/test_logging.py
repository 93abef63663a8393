"""Logs (issue 10): one line per connection that opens and closes, with protocol, user and
peer, for every protocol; `[log] format = "json"` writes one JSON object per line."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import CONFIG, REPO, TARGET

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="reads Tributary's log")

WAIT = 20


def wait_for(predicate, what: str):
    deadline = time.monotonic() + WAIT
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling the log, bounded
    return found


def closed_line(broker, protocol: str, user: str) -> str:
    pattern = re.compile(rf"connection closed .*protocol=\"?{protocol}\"? .*peer=127\.0\.0\.1:\d+ user={user}\b")
    return wait_for(lambda: next((l for l in broker.log_text().splitlines() if pattern.search(l)), None),
                    f"a `connection closed` line for {protocol} user {user}")


def test_text_log_has_one_line_per_connection_close_for_each_protocol(broker):
    conn = broker.connect()
    conn.close()
    line = closed_line(broker, "amqp", "guest")
    assert "vhost=/" in line and "duration_ms=" in line, line

    m = wait_for(lambda: re.search(r"listening protocol=mqtt addr=127\.0\.0\.1:(\d+)", broker.log_text()),
                 "the MQTT listening line")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="log-test", protocol=mqtt.MQTTv311)
    c.username_pw_set("guest", "guest")
    done: queue.Queue = queue.Queue()
    c.on_connect = lambda *_a: done.put("up")
    c.connect("127.0.0.1", int(m.group(1)), keepalive=30)
    c.loop_start()
    assert done.get(timeout=WAIT) == "up"
    assert re.search(r"MQTT connection opened.*peer=127\.0\.0\.1:\d+.*user=guest", broker.log_text())
    c.disconnect()
    c.loop_stop()
    line = closed_line(broker, "mqtt", "guest")
    assert "client=log-test" in line, line


def test_json_log_format():
    root = Path(tempfile.mkdtemp(prefix="tributary-log-json-"))
    binary = Path(os.environ.get("TRIBUTARY_BIN", REPO / "target" / "debug" / "tributary"))
    config = root / "tributary.toml"
    config.write_text(CONFIG.replace('level = "info"', 'level = "info"\nformat = "json"'))
    proc = subprocess.Popen([str(binary), "serve", "--config", str(config), "--data-dir", str(root / "data")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(l.decode()) for l in proc.stdout], daemon=True)
    reader.start()
    try:
        def events():
            return [json.loads(l) for l in list(lines) if l.strip()]

        listening = wait_for(lambda: next((e for e in events()
                                           if e["fields"]["message"].startswith("listening protocol=amqp")), None),
                             "the AMQP listening line")
        port = int(listening["fields"]["message"].rsplit(":", 1)[1])
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        conn.close()
        closed = wait_for(lambda: next((e for e in events() if e["fields"].get("message") == "connection closed"
                                        and e["fields"].get("protocol") == "amqp"), None),
                          "a JSON `connection closed` event")
        assert closed["level"] == "INFO"
        assert closed["fields"]["user"] == "guest"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", closed["fields"]["peer"]), closed
        # Every line the broker wrote is one JSON object.
        assert all(isinstance(e, dict) for e in events())
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        reader.join(5)
        shutil.rmtree(root, ignore_errors=True)
