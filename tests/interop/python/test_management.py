"""The management HTTP API (issue 10), RabbitMQ-compatible, with `requests`; pika and paho
as the clients whose connections it shows and closes; RabbitMQ's own `rabbitmqadmin` script
against it; `/metrics` parsed with prometheus_client's parser; and `tributary ctl`.

Tributary only (the API is on the broker's HTTP listener, found in its log)."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from conftest import TARGET, TributaryBroker
from xmpp_support import DOMAIN, RawXmpp, xb, xmpp_factory  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="needs Tributary's HTTP listener")

WAIT = 20
FIXTURES = Path(__file__).parent / "fixtures"
GUEST = ("guest", "guest")


def listener(b, protocol: str) -> int:
    """The port of a listener, from its `listening protocol=... addr=` log line."""
    deadline = time.monotonic() + WAIT
    pattern = re.compile(rf"listening protocol={protocol} addr=127\.0\.0\.1:(\d+)")
    while not (m := pattern.search(b.log_text())):
        assert time.monotonic() < deadline, f"no `listening protocol={protocol}` line"
        time.sleep(0.02)  # polling the log for the line, bounded
    return int(m.group(1))


class Api:
    """A small client for the API: paths relative to /api, JSON bodies."""

    def __init__(self, b, auth=GUEST):
        self.base = f"http://127.0.0.1:{listener(b, 'http')}"
        self.auth = auth

    def url(self, path: str) -> str:
        return f"{self.base}/api{path}"

    def get(self, path, **kw):
        return requests.get(self.url(path), auth=kw.pop("auth", self.auth), timeout=WAIT, **kw)

    def put(self, path, body=None, **kw):
        return requests.put(self.url(path), auth=kw.pop("auth", self.auth), json=body, timeout=WAIT, **kw)

    def post(self, path, body=None, **kw):
        return requests.post(self.url(path), auth=kw.pop("auth", self.auth), json=body, timeout=WAIT, **kw)

    def delete(self, path, **kw):
        return requests.delete(self.url(path), auth=kw.pop("auth", self.auth), timeout=WAIT, **kw)

    def ok(self, r, *codes):
        assert r.status_code in (codes or (200,)), f"{r.request.method} {r.url}: {r.status_code} {r.text}"
        return r.json() if r.content else None


@pytest.fixture
def api(broker):
    return Api(broker)


def wait_for(predicate, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling the API, bounded
    return value


@pytest.fixture
def second_broker():
    """Another fresh broker, for definitions round trips."""
    root = Path(tempfile.mkdtemp(prefix="tributary-mgmt-"))
    b = TributaryBroker(root)
    try:
        b.start()
        yield b
    finally:
        problems = b.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


# -- authentication and errors -----------------------------------------------------------------


def test_authentication_and_tags(broker, api):
    r = requests.get(api.url("/overview"), timeout=WAIT)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert api.get("/overview", auth=("guest", "wrong")).status_code == 401
    assert api.get("/overview", auth=("nobody", "x")).status_code == 401

    broker.add_user("plain", "pw1")  # no tags: not a management user
    r = api.get("/overview", auth=("plain", "pw1"))
    assert r.status_code == 403 and r.json()["error"] == "not_authorized"

    broker.add_user("watcher", "pw2", tags=["monitoring"])
    assert api.get("/overview", auth=("watcher", "pw2")).status_code == 200
    assert api.get("/queues", auth=("watcher", "pw2")).status_code == 200
    assert api.get("/users", auth=("watcher", "pw2")).status_code == 403
    assert api.put("/users/x", {"password": "p", "tags": ""}, auth=("watcher", "pw2")).status_code == 403
    assert api.get("/whoami", auth=("watcher", "pw2")).json() == {"name": "watcher", "tags": ["monitoring"]}

    # A management user sees only the vhosts it has permissions in.
    api.ok(api.put("/vhosts/other"), 201)
    broker.add_user("mgr", "pw3", tags=["management"], permissions=None)
    api.ok(api.put("/permissions/other/mgr", {"configure": ".*", "write": ".*", "read": ".*"}), 201)
    names = [v["name"] for v in api.ok(api.get("/vhosts", auth=("mgr", "pw3")))]
    assert names == ["other"]
    assert api.get("/queues/%2F", auth=("mgr", "pw3")).status_code == 404
    assert api.get("/queues/other", auth=("mgr", "pw3")).status_code == 200


def test_bad_json_and_unknown_objects(api):
    r = requests.put(api.url("/queues/%2F/q1"), data="{not json", auth=GUEST, timeout=WAIT,
                     headers={"content-type": "application/json"})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "bad_request" and body["reason"]
    r = api.put("/exchanges/%2F/x1", {"type": "no-such-type"})
    assert r.status_code == 400 and r.json()["reason"]
    r = api.put("/queues/%2F/q2", {"durable": "maybe"})
    assert r.status_code == 400 and "durable" in r.json()["reason"]
    for path in ["/queues/%2F/none", "/exchanges/%2F/none", "/vhosts/none", "/users/none",
                 "/queues/none", "/connections/none", "/no-such-endpoint", "/permissions/%2F/none"]:
        r = api.get(path)
        assert r.status_code == 404, path
        assert r.json() == {"error": "Object Not Found", "reason": "Not Found"}, path


def test_overview_nodes_health(api):
    o = api.ok(api.get("/overview"))
    assert o["product_name"] == "Tributary"
    assert {"connections", "channels", "exchanges", "queues", "consumers"} <= set(o["object_totals"])
    assert "messages" in o["queue_totals"]
    assert any(l["protocol"] == "amqp" for l in o["listeners"])
    nodes = api.ok(api.get("/nodes"))
    assert len(nodes) == 1 and nodes[0]["running"] and nodes[0]["mem_used"] > 0
    api.ok(api.get(f"/nodes/{quote(nodes[0]['name'], safe='')}"))
    assert api.ok(api.get("/healthchecks/node")) == {"status": "ok"}
    assert api.ok(api.get("/aliveness-test/%2F")) == {"status": "ok"}
    assert api.get("/aliveness-test/nope").status_code == 404
    assert api.ok(api.get("/whoami")) == {"name": "guest", "tags": ["administrator"]}


# -- exchanges, queues, bindings, publish and get ------------------------------------------------


def test_declare_bind_publish_get_delete(broker, api):
    assert api.put("/exchanges/%2F/mgmt.x", {"type": "direct", "durable": True}).status_code == 201
    assert api.put("/exchanges/%2F/mgmt.x", {"type": "direct", "durable": True}).status_code == 204
    r = api.put("/exchanges/%2F/mgmt.x", {"type": "fanout"})
    assert r.status_code == 400 and "inequivalent" in r.json()["reason"]
    assert api.put("/exchanges/%2F/amq.mine", {"type": "direct"}).status_code == 403
    x = api.ok(api.get("/exchanges/%2F/mgmt.x"))
    assert x["type"] == "direct" and x["durable"] is True and x["vhost"] == "/"
    assert "amq.topic" in [e["name"] for e in api.ok(api.get("/exchanges/%2F"))]

    assert api.put("/queues/%2F/mgmt.q", {"durable": False, "arguments": {"x-max-length": 100}}).status_code == 201
    assert api.put("/queues/%2F/mgmt.q", {"durable": False, "arguments": {"x-max-length": 100}}).status_code == 204
    q = api.ok(api.get("/queues/%2F/mgmt.q"))
    assert q["durable"] is False and q["arguments"] == {"x-max-length": 100} and q["messages"] == 0

    r = api.post("/bindings/%2F/e/mgmt.x/q/mgmt.q", {"routing_key": "k1"})
    assert r.status_code == 201 and r.headers["Location"].endswith("/k1")
    bindings = api.ok(api.get("/bindings/%2F/e/mgmt.x/q/mgmt.q"))
    assert [(b["routing_key"], b["properties_key"]) for b in bindings] == [("k1", "k1")]
    api.ok(api.get("/bindings/%2F/e/mgmt.x/q/mgmt.q/k1"))
    all_bindings = api.ok(api.get("/bindings/%2F"))
    assert {"source": "", "destination": "mgmt.q", "routing_key": "mgmt.q"}.items() <= next(
        b for b in all_bindings if b["source"] == "" and b["destination"] == "mgmt.q").items()
    assert [b["source"] for b in api.ok(api.get("/queues/%2F/mgmt.q/bindings"))] == ["", "mgmt.x"]

    r = api.ok(api.post("/exchanges/%2F/mgmt.x/publish", {
        "routing_key": "k1", "payload": "hello", "payload_encoding": "string",
        "properties": {"content_type": "text/plain", "headers": {"h": 1}, "delivery_mode": 2}}))
    assert r == {"routed": True}
    assert api.ok(api.post("/exchanges/%2F/mgmt.x/publish", {
        "routing_key": "nowhere", "payload": "", "payload_encoding": "string", "properties": {}})) == {"routed": False}
    # The default exchange is amq.default in paths; binary payloads in base64.
    assert api.ok(api.post("/exchanges/%2F/amq.default/publish", {
        "routing_key": "mgmt.q", "payload": "AP8=", "payload_encoding": "base64", "properties": {}})) == {"routed": True}
    assert api.ok(api.get("/queues/%2F/mgmt.q"))["messages"] == 2

    got = api.ok(api.post("/queues/%2F/mgmt.q/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}))
    assert len(got) == 1
    m = got[0]
    assert m["payload"] == "hello" and m["payload_encoding"] == "string" and m["exchange"] == "mgmt.x"
    assert m["routing_key"] == "k1" and m["message_count"] == 1 and m["redelivered"] is False
    assert m["properties"]["content_type"] == "text/plain" and m["properties"]["headers"] == {"h": 1}
    got = api.ok(api.post("/queues/%2F/mgmt.q/get", {"count": 5, "ackmode": "ack_requeue_false", "encoding": "auto"}))
    assert [(g["payload"], g["payload_encoding"], g["redelivered"]) for g in got] == [
        ("hello", "string", True), ("AP8=", "base64", False)]
    assert api.ok(api.get("/queues/%2F/mgmt.q"))["messages"] == 0
    assert api.post("/queues/%2F/mgmt.q/get", {"count": 1, "ackmode": "sideways"}).status_code == 400

    # Purge, through pika's view too.
    for _ in range(3):
        api.ok(api.post("/exchanges/%2F/amq.default/publish", {"routing_key": "mgmt.q", "payload": "x",
                                                                "payload_encoding": "string", "properties": {}}))
    assert api.delete("/queues/%2F/mgmt.q/contents").status_code == 204
    conn = broker.connect()
    try:
        assert conn.channel().queue_declare("mgmt.q", passive=True).method.message_count == 0
    finally:
        conn.close()

    assert api.delete("/bindings/%2F/e/mgmt.x/q/mgmt.q/k1").status_code == 204
    assert api.delete("/bindings/%2F/e/mgmt.x/q/mgmt.q/k1").status_code == 404
    assert api.ok(api.get("/bindings/%2F/e/mgmt.x/q/mgmt.q")) == []
    assert api.delete("/queues/%2F/mgmt.q").status_code == 204
    assert api.get("/queues/%2F/mgmt.q").status_code == 404
    assert api.delete("/exchanges/%2F/mgmt.x").status_code == 204
    assert api.get("/exchanges/%2F/mgmt.x").status_code == 404


def test_if_unused_and_if_empty(broker, api):
    api.ok(api.put("/queues/%2F/busy", {"durable": False}), 201)
    api.ok(api.post("/exchanges/%2F/amq.default/publish", {"routing_key": "busy", "payload": "x",
                                                            "payload_encoding": "string", "properties": {}}))
    assert api.delete("/queues/%2F/busy?if-empty=true").status_code == 400
    assert api.delete("/queues/%2F/busy?if-unused=true").status_code == 204


# -- connections, channels, consumers -----------------------------------------------------------


def test_connections_channels_consumers_and_close(broker, api):
    conn = broker.connect()
    ch = conn.channel()
    ch.queue_declare("watched")
    ch.basic_consume("watched", lambda *a: None, consumer_tag="ctag-1")
    conns = wait_for(lambda: [c for c in api.ok(api.get("/connections")) if c["tributary_protocol"] == "amqp"],
                     "the AMQP connection in /api/connections")
    c = conns[0]
    assert c["user"] == "guest" and c["vhost"] == "/" and c["protocol"] == "AMQP 0-9-1"
    assert c["peer_host"] == "127.0.0.1" and c["port"] == broker.port and c["ssl"] is False
    assert c["channels"] == 1 and c["recv_oct"] > 0 and c["send_oct"] > 0
    assert api.ok(api.get(f"/connections/{quote(c['name'], safe='')}"))["name"] == c["name"]
    channels = api.ok(api.get("/channels"))
    assert [ch_["connection_details"]["name"] for ch_ in channels] == [c["name"]]
    consumers = api.ok(api.get("/consumers/%2F"))
    mine = [(k["consumer_tag"], k["ack_required"]) for k in consumers if k["queue"]["name"] == "watched"]
    assert mine == [("ctag-1", True)]
    assert api.ok(api.get("/overview"))["object_totals"]["consumers"] == len(consumers)

    assert api.delete(f"/connections/{quote(c['name'], safe='')}").status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
    assert e.value.reply_code == 320
    assert "CONNECTION_FORCED" in e.value.reply_text and "management" in e.value.reply_text
    wait_for(lambda: not [c for c in api.ok(api.get("/connections")) if c["tributary_protocol"] == "amqp"],
             "the connection to leave the list")


def test_mqtt_sessions_retained_and_close(broker, api):
    port = listener(broker, "mqtt")
    events = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="mgmt-sensor", protocol=mqtt.MQTTv5)
    client.username_pw_set("guest", "guest")
    client.on_connect = lambda c, u, f, rc, p=None: events.put(("connect", rc))
    client.on_disconnect = lambda c, u, f, rc, p=None: events.put(("disconnect", rc))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert events.get(timeout=WAIT)[0] == "connect"
        client.publish("sensors/t1", b"21.5", qos=1, retain=True).wait_for_publish(WAIT)
        sessions = wait_for(lambda: [s for s in api.ok(api.get("/mqtt/sessions")) if s["client_id"] == "mgmt-sensor"],
                            "the MQTT session")
        assert sessions[0]["connected"] is True and sessions[0]["user"] == "guest"
        retained = api.ok(api.get("/mqtt/retained"))
        assert [(r["topic"], r["payload"]) for r in retained if not r["topic"].startswith("$SYS")] == [
            ("sensors/t1", "21.5")]
        c = next(c for c in api.ok(api.get("/connections")) if c["tributary_protocol"] == "mqtt")
        assert c["client_id"] == "mgmt-sensor" and c["recv_cnt"] == 1
        assert api.ok(api.get("/xmpp/sessions")) == []
        assert api.delete(f"/connections/{quote(c['name'], safe='')}").status_code == 204
        kind, rc = events.get(timeout=WAIT)
        assert kind == "disconnect" and rc.value == 0x98  # Administrative action
    finally:
        client.loop_stop()


# -- users, vhosts, permissions ----------------------------------------------------------------


def test_users_vhosts_permissions(broker, api):
    assert api.put("/users/alice", {"password": "alice-pw", "tags": "management,monitoring"}).status_code == 201
    u = api.ok(api.get("/users/alice"))
    assert u["tags"] == ["management", "monitoring"] and u["password_hash"]
    assert api.put("/users/alice", {"tags": "administrator"}).status_code == 204
    assert api.ok(api.get("/users/alice"))["tags"] == ["administrator"]
    assert api.put("/users/bob", {"tags": ""}).status_code == 400
    assert "alice" in [u["name"] for u in api.ok(api.get("/users"))]

    # No permissions yet: pika is refused; after PUT it connects.
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        broker.connect(user="alice", password="alice-pw").close()
    assert api.put("/permissions/%2F/alice", {"configure": "", "write": ".*", "read": ".*"}).status_code == 201
    assert api.put("/permissions/%2F/alice", {"configure": ".*", "write": ".*", "read": ".*"}).status_code == 204
    assert api.ok(api.get("/permissions/%2F/alice"))["configure"] == ".*"
    assert {"user": "alice", "vhost": "/"}.items() <= api.ok(api.get("/users/alice/permissions"))[0].items()
    broker.connect(user="alice", password="alice-pw").close()
    assert api.put("/permissions/%2F/alice", {"configure": ".*"}).status_code == 400
    assert api.put("/permissions/nope/alice", {"configure": "", "write": "", "read": ""}).status_code == 400

    assert api.put("/vhosts/tenant-a", {"description": "first tenant"}).status_code == 201
    assert api.put("/vhosts/tenant-a").status_code == 204
    v = api.ok(api.get("/vhosts/tenant-a"))
    assert v["name"] == "tenant-a" and v["description"] == "first tenant" and v["messages"] == 0
    assert api.put("/queues/tenant-a/inside", {"durable": False}).status_code == 403  # guest has no permissions there
    api.ok(api.put("/permissions/tenant-a/guest", {"configure": ".*", "write": ".*", "read": ".*"}), 201)
    assert api.put("/queues/tenant-a/inside", {"durable": False}).status_code == 201
    assert [q["vhost"] for q in api.ok(api.get("/queues")) if q["name"] == "inside"] == ["tenant-a"]
    assert [p["user"] for p in api.ok(api.get("/vhosts/tenant-a/permissions"))] == ["guest"]
    assert api.delete("/vhosts/tenant-a").status_code == 204
    assert api.get("/vhosts/tenant-a").status_code == 404
    assert api.get("/permissions/tenant-a/guest").status_code == 404

    assert api.delete("/permissions/%2F/alice").status_code == 204
    assert api.delete("/users/alice").status_code == 204
    assert api.get("/users/alice").status_code == 404
    assert api.delete("/users/alice").status_code == 404


# -- definitions -------------------------------------------------------------------------------


def comparable(defs):
    """The parts of a definitions document a round trip must keep."""
    def strip(items, keys):
        return sorted((tuple(json.dumps(i.get(k), sort_keys=True) for k in keys) for i in items))
    return {
        "users": strip(defs["users"], ["name", "password_hash", "hashing_algorithm", "tags"]),
        "vhosts": strip(defs["vhosts"], ["name"]),
        "permissions": strip(defs["permissions"], ["user", "vhost", "configure", "write", "read"]),
        "queues": strip(defs["queues"], ["name", "vhost", "durable", "auto_delete", "arguments"]),
        "exchanges": strip(defs["exchanges"], ["name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"]),
        "bindings": strip(defs["bindings"], ["source", "vhost", "destination", "destination_type", "routing_key", "arguments"]),
    }


def test_definitions_round_trip(broker, api, second_broker):
    api.ok(api.put("/users/carol", {"password": "carol-pw", "tags": "monitoring"}), 201)
    api.ok(api.put("/vhosts/dev"), 201)
    api.ok(api.put("/permissions/dev/carol", {"configure": "^c", "write": ".*", "read": ".*"}), 201)
    api.ok(api.put("/permissions/dev/guest", {"configure": ".*", "write": ".*", "read": ".*"}), 201)
    api.ok(api.put("/exchanges/dev/ex.topic", {"type": "topic", "durable": True}), 201)
    api.ok(api.put("/exchanges/dev/ex.fan", {"type": "fanout", "durable": True, "auto_delete": False}), 201)
    api.ok(api.put("/queues/dev/q.one", {"durable": True, "arguments": {"x-message-ttl": 60000}}), 201)
    api.ok(api.post("/bindings/dev/e/ex.topic/q/q.one", {"routing_key": "a.#"}), 201)
    api.ok(api.post("/bindings/dev/e/ex.topic/e/ex.fan", {"routing_key": "b.*"}), 201)
    exported = api.ok(api.get("/definitions"))
    assert exported["rabbit_version"] and exported["product_name"] == "Tributary"

    other = Api(second_broker)
    assert other.post("/definitions", exported).status_code == 204
    again = other.ok(other.get("/definitions"))
    assert comparable(again) == comparable(exported)
    # The imported user logs in with its password (the hash came across).
    assert other.get("/whoami", auth=("carol", "carol-pw")).status_code == 200
    # Malformed documents are refused with a reason.
    r = other.post("/definitions", {"queues": "nope"})
    assert r.status_code == 400 and "queues" in r.json()["reason"]


def test_rabbitmq_definitions_file_imports_as_is(broker, api):
    text = (FIXTURES / "rabbitmq_definitions.json").read_text()
    r = requests.post(api.url("/definitions"), data=text, auth=GUEST, timeout=WAIT,
                      headers={"content-type": "application/json"})
    assert r.status_code == 204, r.text
    assert "shop" in [v["name"] for v in api.ok(api.get("/vhosts"))]
    q = api.ok(api.get("/queues/shop/orders.created"))
    assert q["durable"] and q["arguments"]["x-dead-letter-exchange"] == "orders.dlx"
    assert api.ok(api.get("/exchanges/shop/orders"))["type"] == "topic"
    assert [b["routing_key"] for b in api.ok(api.get("/bindings/shop/e/orders/q/orders.created"))] == ["order.created.#"]
    # RabbitMQ's SHA-256 password hashes work: over HTTP and over AMQP.
    assert api.get("/whoami", auth=("ops", "ops-secret")).status_code == 200
    assert api.get("/whoami", auth=("ops", "wrong")).status_code == 401
    exported = api.ok(api.get("/users/orders-app"))
    assert exported["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    conn = broker.connect(user="orders-app", password="orders-pw", vhost="shop")
    try:
        ch = conn.channel()
        ch.basic_publish("orders", "order.created.eu", b"order-1")
        method, _, body = wait_for(lambda: ch.basic_get("orders.created", auto_ack=True), "the routed order")[0:3]
        assert body == b"order-1"
    finally:
        conn.close()


# -- rabbitmqadmin -----------------------------------------------------------------------------


def rabbitmqadmin_script() -> Path | None:
    candidates = [Path(os.environ["RABBITMQADMIN"])] if os.environ.get("RABBITMQADMIN") else []
    candidates += [Path("/usr/bin/rabbitmqadmin"), Path("/usr/sbin/rabbitmqadmin")]
    candidates += sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/plugins/rabbitmq_management-*/priv/www/cli/rabbitmqadmin"))
    return next((c for c in candidates if c.is_file()), None)


def test_rabbitmqadmin(broker):
    script = rabbitmqadmin_script()
    if script is None:
        if os.environ.get("CI"):
            pytest.fail("rabbitmqadmin not found: .ci/run extracts it from Debian's rabbitmq-server")
        pytest.skip("rabbitmqadmin not found: install Debian's rabbitmq-server package (CI does)")
    port = listener(broker, "http")

    def admin(*args) -> str:
        res = subprocess.run(["python3", str(script), "-H", "127.0.0.1", "-P", str(port), "-u", "guest",
                              "-p", "guest", *args], capture_output=True, timeout=WAIT)
        assert res.returncode == 0, f"rabbitmqadmin {' '.join(args)}: {res.stdout!r} {res.stderr!r}"
        return res.stdout.decode()

    admin("declare", "queue", "name=q", "durable=true")
    listing = admin("list", "queues")
    assert re.search(r"\|\s*q\s*\|\s*0\s*\|", listing), listing
    admin("publish", "routing_key=q", "payload=hi")
    assert re.search(r"\|\s*q\s*\|\s*1\s*\|", admin("list", "queues"))
    got = admin("get", "queue=q")
    assert re.search(r"\|\s*q\s*\|\s*\|\s*1\s*\|\s*hi\s*\|", got) or " hi " in got, got
    got_json = json.loads(admin("-f", "raw_json", "get", "queue=q", "ackmode=ack_requeue_false"))
    assert [(m["payload"], m["routing_key"]) for m in got_json] == [("hi", "q")]
    exchanges = admin("list", "exchanges")
    assert "amq.topic" in exchanges and "topic" in exchanges
    assert "guest" in admin("list", "users")
    admin("declare", "exchange", "name=adm.x", "type=fanout")
    admin("declare", "binding", "source=adm.x", "destination=q")
    assert "adm.x" in admin("list", "bindings")
    admin("delete", "queue", "name=q")
    assert "| q " not in admin("list", "queues")
    assert "Tributary" in admin("show", "overview") or admin("show", "overview")


# -- metrics -----------------------------------------------------------------------------------


def scrape(broker) -> dict:
    port = listener(broker, "http")
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=WAIT)  # no credentials needed
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_move_after_publishing(broker):
    conn = broker.connect()
    try:
        ch = conn.channel()
        ch.queue_declare("metered")
        before = scrape(broker)
        assert before[("tributary_connections", (("protocol", "amqp"),))] >= 1
        assert before[("tributary_queue_messages_ready", (("queue", "metered"), ("vhost", "/")))] == 0
        for i in range(3):
            ch.basic_publish("", "metered", b"m%d" % i)
        ch.queue_declare("metered", passive=True)  # a round trip: the publishes were handled
        after = scrape(broker)
        q = (("queue", "metered"), ("vhost", "/"))
        assert after[("tributary_queue_messages_ready", q)] == 3
        assert after[("tributary_queue_messages_published_total", q)] == 3
        assert after[("tributary_queue_messages_ready_bytes", q)] == 6
        amqp = (("protocol", "amqp"),)
        assert after[("tributary_messages_published_total", amqp)] - before[("tributary_messages_published_total", amqp)] == 3
        assert after[("tributary_received_bytes_total", amqp)] > before[("tributary_received_bytes_total", amqp)]
        assert after[("process_resident_memory_bytes", ())] > 0 and after[("process_open_fds", ())] > 0
        method, _, _ = ch.basic_get("metered", auto_ack=False)
        ch.basic_ack(method.delivery_tag)
        ch.queue_declare("metered", passive=True)
        last = scrape(broker)
        assert last[("tributary_queue_messages_delivered_total", q)] == 1
        assert last[("tributary_queue_messages_acked_total", q)] == 1
        assert ("tributary_store_fsyncs_total", ()) in last
        assert last[("tributary_channels", ())] >= 1
        # The delivery latency histogram counted the basic.get.
        lat = "tributary_delivery_latency_seconds"
        assert last[(lat + "_count", ())] >= 1
        assert last[(lat + "_bucket", (("le", "+Inf"),))] == last[(lat + "_count", ())]
        assert last[(lat + "_bucket", (("le", "10"),))] >= 1 and (lat + "_bucket", (("le", "0.001"),)) in last
    finally:
        conn.close()


# -- tributary ctl -----------------------------------------------------------------------------


def ctl(broker, *args, url=None, env=None):
    port = listener(broker, "http")
    full_env = dict(os.environ, TRIBUTARY_URL=url or f"http://127.0.0.1:{port}", NO_COLOR="1", **(env or {}))
    return subprocess.run([str(broker.bin), "ctl", *args], capture_output=True, timeout=WAIT, env=full_env)


def test_ctl_tables_json_and_exit_codes(broker):
    def ok(*args):
        res = ctl(broker, *args)
        assert res.returncode == 0, f"ctl {args}: {res.stdout!r} {res.stderr!r}"
        return res.stdout.decode()

    ok("declare_queue", "ctl.q1")
    ok("declare_queue", "ctl.queue.with.a.long.name", "--durable", "false")
    table = ok("list", "queues")
    lines = table.splitlines()
    assert lines[0].split() == ["vhost", "name", "durable", "messages", "messages_ready",
                                "messages_unacknowledged", "consumers"]
    # Aligned: every row's second column starts where the header's does.
    col = lines[0].index("name")
    assert all(line[col - 2:col] == "  " and line[col] != " " for line in lines[1:]), table
    assert {line.split()[1] for line in lines[1:]} >= {"ctl.q1", "ctl.queue.with.a.long.name"}
    as_json = json.loads(ok("list", "queues", "--format", "json", "-p", "/"))
    assert {q["name"] for q in as_json} >= {"ctl.q1"}
    assert "amq.topic" in ok("list", "exchanges")
    ok("add_user", "dave", "dave-pw", "--tags", "management")
    ok("set_permissions", "dave", ".*", ".*", ".*")
    users = ok("list", "users")
    assert re.search(r"^dave\s+management$", users, re.M), users
    assert "/" in ok("list", "vhosts")
    ok("list", "bindings")
    ok("list", "connections")
    ok("list", "sessions")
    status = ok("status")
    assert "Tributary" in status and "queues:" in status
    ok("purge_queue", "ctl.q1")
    ok("delete_queue", "ctl.q1")
    # The API's credentials from flags: dave may look but not add users.
    res = ctl(broker, "--user", "dave", "--password", "dave-pw", "add_user", "eve", "pw")
    assert res.returncode == 1 and b"403" in res.stderr
    res = ctl(broker, "delete_user", "nobody")
    assert res.returncode == 1 and b"404" in res.stderr
    res = ctl(broker, "--password", "wrong", "list", "queues")
    assert res.returncode == 1 and b"401" in res.stderr
    res = ctl(broker, "list", "nonsense")
    assert res.returncode == 2
    res = ctl(broker, "status", url="http://127.0.0.1:1")
    assert res.returncode == 3, res.stderr

    path = broker.root / "defs.json"
    ok("export_definitions", str(path))
    defs = json.loads(path.read_text())
    assert "dave" in [u["name"] for u in defs["users"]]
    ok("delete_user", "dave")
    ok("import_definitions", str(path))
    assert re.search(r"^dave\s", ok("list", "users"), re.M)

    # Closing a connection by name.
    conn = broker.connect()
    try:
        name = json.loads(ok("list", "connections", "--format", "json"))[0]["name"]
        ok("close_connection", name)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.2)
        assert e.value.reply_code == 320
    finally:
        if conn.is_open:
            conn.close()


def test_xmpp_sessions_and_close(xb):
    api = Api(xb)
    with RawXmpp(xb.xmpp_port) as c:
        c.login("guest", "guest", "mgmt")
        jid = f"guest@{DOMAIN}/mgmt"
        sessions = wait_for(lambda: api.ok(api.get("/xmpp/sessions")), "the XMPP session")
        assert [(s["jid"], s["user"]) for s in sessions] == [(jid, "guest")]
        conn = next(k for k in api.ok(api.get("/connections")) if k["tributary_protocol"] == "xmpp")
        assert conn["client_id"] == jid and conn["user"] == "guest" and conn["recv_oct"] > 0
        assert api.delete(f"/connections/{quote(conn['name'], safe='')}").status_code == 204
        closed = c.expect_stream_error()
        assert closed.error == "policy-violation" and "management" in (closed.text or ""), c.log()
    wait_for(lambda: not api.ok(api.get("/xmpp/sessions")), "the session to end")


# -- message rates, columns and sort, one vhost's definitions, vhost limits --------------------


def overview_with(api, predicate):
    """The overview, once `predicate(overview)` holds (the rate sampler reads every second)."""
    def probe():
        o = api.ok(api.get("/overview"))
        return o if predicate(o) else None
    return wait_for(probe, "the overview to show it")


def test_message_rates(broker, api):
    o = api.ok(api.get("/overview"))
    for k in ("publish", "deliver_get", "ack", "redeliver"):
        assert o["message_stats"][f"{k}_details"] == {"rate": 0.0}, k
    assert {"amqp", "mqtt", "xmpp"} <= set(o["protocols"])
    conn = broker.connect()
    try:
        ch = conn.channel()
        ch.queue_declare("rated")
        for _ in range(20):
            ch.basic_publish("", "rated", b"x")
        ch.queue_declare("rated", passive=True)  # a round trip: the publishes were handled
        o = overview_with(api, lambda o: o["message_stats"]["publish_details"]["rate"] > 0)
        amqp = o["protocols"]["amqp"]
        assert amqp["connections"] == 1 and amqp["sessions"] == 1  # one channel
        assert amqp["messages_published"] == 20 and amqp["publish_details"]["rate"] > 0
        assert o["protocols"]["mqtt"]["publish_details"]["rate"] == 0
        q = api.ok(api.get("/queues/%2F/rated"))
        assert q["message_stats"]["publish"] == 20
        assert q["message_stats"]["publish_details"]["rate"] > 0
        assert q["message_stats"]["deliver_get_details"]["rate"] == 0
        listed = next(x for x in api.ok(api.get("/queues")) if x["name"] == "rated")
        assert listed["message_stats"]["publish_details"]["rate"] > 0
    finally:
        conn.close()


def test_columns_and_sort(api):
    for name, depth in (("sort.a", 3), ("sort.b", 1), ("sort.c", 2)):
        api.ok(api.put(f"/queues/%2F/{name}", {"durable": False}), 201)
        for _ in range(depth):
            body = {"routing_key": name, "payload": "x", "payload_encoding": "string", "properties": {}}
            assert api.ok(api.post("/exchanges/%2F/amq.default/publish", body)) == {"routed": True}
    params = {"sort": "messages", "sort_reverse": "true", "columns": "name,messages,message_stats.publish"}
    rows = [r for r in api.ok(api.get("/queues/%2F", params=params)) if r["name"].startswith("sort.")]
    assert rows == [
        {"name": "sort.a", "messages": 3, "message_stats": {"publish": 3}},
        {"name": "sort.c", "messages": 2, "message_stats": {"publish": 2}},
        {"name": "sort.b", "messages": 1, "message_stats": {"publish": 1}},
    ]
    rows = api.ok(api.get("/queues", params={"sort": "message_stats.publish", "columns": "name"}))
    assert [r["name"] for r in rows if r["name"].startswith("sort.")] == ["sort.b", "sort.c", "sort.a"]
    assert all(set(r) == {"name"} for r in rows)
    names = [x["name"] for x in api.ok(api.get("/exchanges", params={"sort": "name", "sort_reverse": "true"}))]
    assert names == sorted(names, reverse=True) and len(names) > 3
    o = api.ok(api.get("/overview", params={"columns": "object_totals.queues,product_name"}))
    assert set(o) == {"object_totals", "product_name"} and set(o["object_totals"]) == {"queues"}
    # Errors are not re-shaped.
    assert api.get("/queues/nope", params={"columns": "name"}).json()["error"] == "Object Not Found"


def test_definitions_of_one_vhost(api):
    for v in ("src", "dst"):
        api.ok(api.put(f"/vhosts/{v}"), 201)
        api.ok(api.put(f"/permissions/{v}/guest", {"configure": ".*", "write": ".*", "read": ".*"}), 201)
    api.ok(api.put("/exchanges/src/vx", {"type": "topic", "durable": True}), 201)
    api.ok(api.put("/queues/src/vq", {"durable": True, "arguments": {"x-max-length": 5}}), 201)
    api.ok(api.post("/bindings/src/e/vx/q/vq", {"routing_key": "a.#"}), 201)
    api.ok(api.put("/queues/%2F/elsewhere", {"durable": True}), 201)
    assert api.put("/vhost-limits/src/max-queues", {"value": 7}).status_code == 204

    everything = api.ok(api.get("/definitions"))
    assert everything["parameters"] == [{"vhost": "src", "component": "vhost-limits", "name": "limits",
                                         "value": {"max-queues": 7}}]
    defs = api.ok(api.get("/definitions/src"))
    assert defs["parameters"] == [{"component": "vhost-limits", "name": "limits", "value": {"max-queues": 7}}]
    assert "users" not in defs and "vhosts" not in defs and "permissions" not in defs
    assert defs["queues"] == [{"name": "vq", "durable": True, "auto_delete": False,
                               "arguments": {"x-max-length": 5}}]
    assert [x["name"] for x in defs["exchanges"]] == ["vx"] and "vhost" not in defs["exchanges"][0]
    assert [(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]] == [("vx", "vq", "a.#")]

    assert api.post("/definitions/dst", defs).status_code == 204
    assert api.ok(api.get("/queues/dst/vq"))["arguments"] == {"x-max-length": 5}
    assert api.ok(api.get("/exchanges/dst/vx"))["type"] == "topic"
    assert [b["routing_key"] for b in api.ok(api.get("/bindings/dst/e/vx/q/vq"))] == ["a.#"]
    assert api.get("/queues/dst/elsewhere").status_code == 404
    assert api.ok(api.get("/vhost-limits/dst")) == [{"vhost": "dst", "value": {"max-queues": 7}}]
    assert api.get("/definitions/nope").status_code == 404
    r = api.post("/definitions/dst", {"queues": "not a list"})
    assert r.status_code == 400 and r.json()["reason"]
    assert api.get("/definitions/src", auth=("watcher", "x")).status_code == 401


def test_vhost_limits(broker, api):
    assert api.ok(api.get("/vhost-limits")) == []
    assert api.put("/vhost-limits/%2F/max-connections", {"value": 1}).status_code == 204
    assert api.ok(api.get("/vhost-limits")) == [{"vhost": "/", "value": {"max-connections": 1}}]
    first = broker.connect()
    try:
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            broker.connect()
    finally:
        first.close()
    assert api.put("/vhost-limits/%2F/max-queues", {"value": "10"}).status_code == 204
    assert api.ok(api.get("/vhost-limits/%2F")) == [
        {"vhost": "/", "value": {"max-connections": 1, "max-queues": 10}}]
    assert api.delete("/vhost-limits/%2F/max-connections").status_code == 204
    assert api.delete("/vhost-limits/%2F/max-connections").status_code == 404
    broker.connect().close()  # two at once are fine again
    second = broker.connect()
    broker.connect().close()
    second.close()
    r = api.put("/vhost-limits/%2F/max-frobs", {"value": 1})
    assert r.status_code == 400 and "max-frobs" in r.json()["reason"]
    assert api.put("/vhost-limits/%2F/max-queues", {"value": "lots"}).status_code == 400
    assert api.put("/vhost-limits/%2F/max-queues", {}).status_code == 400
    assert api.put("/vhost-limits/nope/max-queues", {"value": 1}).status_code == 404
    broker.add_user("limwatch", "pw", tags=["monitoring"])
    assert api.put("/vhost-limits/%2F/max-queues", {"value": 1}, auth=("limwatch", "pw")).status_code == 403
    assert api.ok(api.get("/vhost-limits", auth=("limwatch", "pw"))) == [
        {"vhost": "/", "value": {"max-queues": 10}}]
    assert api.put("/vhost-limits/%2F/max-queues", {"value": -1}).status_code == 204
    assert api.ok(api.get("/vhost-limits")) == []


# -- XMPP rooms and pubsub nodes ---------------------------------------------------------------


def test_xmpp_rooms_and_pubsub_nodes(xb):
    api = Api(xb)
    assert api.ok(api.get("/xmpp/rooms")) == []
    room = f"lounge@conference.{DOMAIN}"
    with RawXmpp(xb.xmpp_port) as c:
        c.login("guest", "guest", "mgmt")
        c.send(f"<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        c.wait_for(lambda e: e.tag.endswith("}presence") and e.get("from") == f"{room}/alice",
                   "the room's self-presence")
        created = c.iq("set", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='news'/></pubsub>",
                       to=f"pubsub.{DOMAIN}")
        assert created.get("type") == "result", c.log()
        rooms = api.ok(api.get("/xmpp/rooms"))
        assert [r["jid"] for r in rooms] == [room]
        assert rooms[0]["occupants"] == [{"nick": "alice", "role": "moderator"}]
        assert {"jid": f"guest@{DOMAIN}", "affiliation": "owner"} in rooms[0]["affiliations"]
        nodes = [n for n in api.ok(api.get("/xmpp/pubsub")) if n["node"] == "news"]
        assert len(nodes) == 1, nodes
        assert nodes[0]["service"] == f"pubsub.{DOMAIN}" and nodes[0]["owners"] == [f"guest@{DOMAIN}"]
        assert nodes[0]["items"] == 0 and nodes[0]["access_model"] == "open"
    # Rooms belong to no vhost: management users (not monitoring) are refused.
    xb.add_user("roomless", "pw", tags=["management"])
    assert api.get("/xmpp/rooms", auth=("roomless", "pw")).status_code == 403
    assert api.get("/xmpp/pubsub", auth=("roomless", "pw")).status_code == 403


# -- store metrics -----------------------------------------------------------------------------


def test_metrics_store_fsync_latency_and_bytes_written(broker):
    conn = broker.connect()
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("fsynced", durable=True)
        before = scrape(broker)
        # Confirmed persistent messages to a durable queue: written and fsynced first.
        for _ in range(3):
            ch.basic_publish("", "fsynced", b"x" * 1000, pika.BasicProperties(delivery_mode=2))
        after = scrape(broker)
    finally:
        conn.close()
    written = "tributary_store_bytes_written_total"
    assert after[(written, ())] >= before[(written, ())] + 3000
    h = "tributary_store_fsync_duration_seconds"
    assert after[(h + "_count", ())] > before[(h + "_count", ())]
    assert after[(h + "_count", ())] == after[("tributary_store_fsyncs_total", ())]
    assert after[(h + "_bucket", (("le", "+Inf"),))] == after[(h + "_count", ())]
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in after.items()
                     if name == h + "_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert after[(h + "_sum", ())] > 0


# -- HTTP login failures, ctl's config file and HTTPS ------------------------------------------


@pytest.fixture
def tls_broker(tmp_path):
    """A broker whose HTTPS listener has a certificate for 127.0.0.1 from a throwaway CA, and a
    short `[auth] failure_delay_ms`. Yields (broker, CA file)."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    cert, key, ca_path = tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    root = Path(tempfile.mkdtemp(prefix="tributary-mgmt-tls-"))
    b = TributaryBroker(root)
    b.extra_config = f'\n[tls]\ncertificate = "{cert}"\nkey = "{key}"\n\n[auth]\nfailure_delay_ms = 300\n'
    try:
        b.start()
        yield b, ca_path
    finally:
        problems = b.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


def test_http_login_failures_are_logged_and_delayed(tls_broker):
    b, _ = tls_broker
    api = Api(b)
    started = time.monotonic()
    r = api.get("/overview", auth=("guest", "nope"))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert time.monotonic() - started >= 0.3  # at least [auth] failure_delay_ms
    wait_for(lambda: re.search(r"login refused protocol=\"http\" user=guest peer=127\.0\.0\.1:\d+", b.log_text()),
             "the refused login in the log")
    # A script that asks for no challenge (the dashboard) gets none: no browser dialog.
    r = api.get("/overview", auth=("guest", "nope"), headers={"X-Requested-With": "XMLHttpRequest"})
    assert r.status_code == 401 and "WWW-Authenticate" not in r.headers
    assert api.get("/overview").status_code == 200


def test_ctl_config_file_and_https(tls_broker, tmp_path):
    b, ca = tls_broker
    url = f"https://127.0.0.1:{listener(b, 'https')}"
    home = tmp_path / "home"
    home.mkdir()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("TRIBUTARY_") and k != "XDG_CONFIG_HOME"}

    def run(*args, **env):
        return subprocess.run([str(b.bin), "ctl", *args], capture_output=True, timeout=WAIT,
                              env={**base_env, "HOME": str(home), "NO_COLOR": "1", **env})

    # The HTTPS listener serves the API and the dashboard.
    page = requests.get(f"{url}/", verify=str(ca), timeout=WAIT)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "dashboard/app.js" in page.text

    # --config: url, credentials and a CA path relative to the file.
    cfg = tmp_path / "ctl.toml"
    cfg.write_text(f'url = "{url}"\nuser = "guest"\npassword = "guest"\nca = "ca.pem"\n')
    res = run("--config", str(cfg), "status")
    assert res.returncode == 0, res.stderr
    assert b"Tributary" in res.stdout

    # Without a CA file the system's bundle is used, which does not know the throwaway CA.
    res = run("--url", url, "status")
    assert res.returncode == 3, res.stderr

    # The default file, ~/.config/tributary/ctl.toml; flags and the environment beat it.
    (home / ".config" / "tributary").mkdir(parents=True)
    (home / ".config" / "tributary" / "ctl.toml").write_text(f'url = "{url}"\nca = "{ca}"\n')
    res = run("list", "vhosts", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert [v["name"] for v in json.loads(res.stdout)] == ["/"]
    res = run("--password", "wrong", "list", "vhosts")
    assert res.returncode == 1 and b"401" in res.stderr
    res = run("list", "vhosts", TRIBUTARY_PASSWORD="wrong")
    assert res.returncode == 1 and b"401" in res.stderr
    res = run("--url", f"http://127.0.0.1:{listener(b, 'http')}", "list", "vhosts")
    assert res.returncode == 0, res.stderr

    # A bad file, or one that is missing, is a usage error.
    cfg.write_text('url = "x"\nno_such_key = 1\n')
    res = run("--config", str(cfg), "status")
    assert res.returncode == 2 and b"no_such_key" in res.stderr
    res = run("--config", str(tmp_path / "missing.toml"), "status")
    assert res.returncode == 2
    res = run("--url", "ftp://127.0.0.1", "status")
    assert res.returncode == 2
