"""Clustering (issue 14, part 1): three `tributary serve` processes on loopback, each with
its own data dir, forming one metadata Raft group; definitions declared on one node are
seen on the others (pika passive declares, the management API); a leader killed with
SIGKILL is replaced; an isolated node refuses definition changes with RabbitMQ's 541
wording; a restarted node catches up; a node with a wrong secret is refused.

Every port is 0 and read back from the log. Node 1 starts alone and forms the cluster;
nodes 2 and 3 are started with the running nodes' cluster addresses as seeds and join it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest
import requests

from conftest import REPO, TARGET

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="runs Tributary processes")

SECRET = "test-cluster-secret"
WAIT = 20.0
LISTEN = re.compile(r"listening protocol=(\w+) addr=(\S+)")


class Node:
    """One `tributary serve` process that can be killed and started again on the same data
    dir and cluster port."""

    def __init__(self, root: Path, node_id: int, secret: str = SECRET):
        self.root = root / f"node{node_id}"
        self.root.mkdir(parents=True)
        self.id = node_id
        self.secret = secret
        self.data_dir = self.root / "data"
        self.bin = Path(os.environ.get("TRIBUTARY_BIN", REPO / "target" / "debug" / "tributary"))
        self.proc: subprocess.Popen | None = None
        self.addrs: dict[str, str] = {}
        self.cluster_port = 0
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()

    def start(self, seeds: list[str]):
        listen = f"127.0.0.1:{self.cluster_port}"
        config = f"""\
[listeners]
amqp = "127.0.0.1:0"
http = "127.0.0.1:0"
mqtt = ""
xmpp = ""
xmpps = ""
mqtts = ""
amqps = ""
https = ""
xmpp_server = ""
xmpps_server = ""
cluster = "{listen}"

[log]
level = "info"

[cluster]
node_id = {self.id}
seeds = {seeds!r}
secret = "{self.secret}"
command_timeout_ms = 3000
heartbeat_ms = 100
election_timeout_ms = 600
""".replace("'", '"')
        (self.root / "tributary.toml").write_text(config)
        self.addrs = {}
        self.ready.clear()
        self.proc = subprocess.Popen(
            [str(self.bin), "serve", "--config", str(self.root / "tributary.toml"),
             "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, NO_COLOR="1", RUST_LOG="info"),
            cwd=self.root,
        )
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        if not self.ready.wait(WAIT):
            pytest.fail(f"node {self.id} did not start; log:\n{self.log()[-5000:]}")
        self.cluster_port = int(self.addrs["cluster"].rsplit(":", 1)[1])

    def _drain(self, proc):
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            with self.lock:
                self.lines.append(line)
            m = LISTEN.search(line)
            if m:
                self.addrs[m.group(1)] = m.group(2)
                if {"amqp", "http", "cluster"} <= self.addrs.keys():
                    self.ready.set()

    def log(self) -> str:
        with self.lock:
            return "".join(self.lines)

    @property
    def cluster_addr(self) -> str:
        return self.addrs["cluster"]

    def seed(self) -> str:
        return f"{self.id}@{self.cluster_addr}"

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- clients ------------------------------------------------------------------------
    def connect(self, user="guest", password="guest", vhost="/") -> pika.BlockingConnection:
        host, port = self.addrs["amqp"].rsplit(":", 1)
        return pika.BlockingConnection(pika.ConnectionParameters(
            host=host, port=int(port), virtual_host=vhost,
            credentials=pika.PlainCredentials(user, password),
            connection_attempts=1, socket_timeout=10, stack_timeout=20,
        ))

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"http://{self.addrs['http']}{path}",
                                auth=("guest", "guest"), timeout=15, **kw)

    def status(self) -> dict:
        r = self.api("GET", "/api/cluster")
        r.raise_for_status()
        return r.json()


def wait_for(predicate, what: str, timeout: float = WAIT):
    """Polls `predicate` until it is true (bounded): the observed state lives in other
    processes, so there is no event to await."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except (requests.RequestException, pika.exceptions.AMQPError, OSError) as e:
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(0.05)


def voters(node: Node) -> set[int]:
    return {m["id"] for m in node.status()["members"] if m["voter"]}


def settled(nodes: list[Node]) -> bool:
    """Every node sees the same leader, the three voters in a plain (not joint)
    configuration, and has applied the leader's whole log."""
    st = [n.status() for n in nodes]
    last = st[0]["last_log_index"]
    return all(
        s["leader"] == st[0]["leader"] is not None and not s["joint"]
        and {m["id"] for m in s["members"] if m["voter"]} == {n.id for n in nodes}
        and s["last_applied"] == last
        for s in st
    )


def exists(node: Node, kind: str, name: str, vhost: str = "/") -> bool:
    conn = node.connect(vhost=vhost)
    try:
        ch = conn.channel()
        try:
            if kind == "queue":
                ch.queue_declare(name, passive=True)
            else:
                ch.exchange_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return False
    finally:
        if conn.is_open:
            conn.close()


@pytest.fixture
def nodes():
    root = Path(tempfile.mkdtemp(prefix="tributary-cluster-"))
    made: list[Node] = []
    try:
        yield root, made
    finally:
        for n in made:
            n.stop()
        failed = [n for n in made if "panicked at" in n.log()]
        keep = os.environ.get("TRIBUTARY_CLUSTER_LOGS")
        if keep:
            for n in made:
                Path(keep, f"node{n.id}.log").write_text(n.log())
        shutil.rmtree(root, ignore_errors=True)
        assert not failed, "a node panicked:\n" + "\n".join(n.log()[-5000:] for n in failed)


@pytest.fixture
def cluster3(nodes):
    root, made = nodes
    n1 = Node(root, 1)
    made.append(n1)
    n1.start([])
    wait_for(lambda: n1.status()["leader"] == 1, "node 1 to form a cluster")
    n2 = Node(root, 2)
    made.append(n2)
    n2.start([n1.seed()])
    n3 = Node(root, 3)
    made.append(n3)
    n3.start([n1.seed(), n2.seed()])
    wait_for(lambda: settled(made), "three voters, every node up to date")
    return made


def test_definitions_declared_on_one_node_are_on_all(cluster3):
    n1, n2, n3 = cluster3
    conn = n1.connect()
    ch = conn.channel()
    ch.exchange_declare("cl.x", "topic", durable=True)
    ch.queue_declare("cl.q", durable=True)
    ch.queue_bind("cl.q", "cl.x", "a.#")
    conn.close()
    # vhost, user and permissions through the management API of node 1.
    assert n1.api("PUT", "/api/vhosts/cl-vh").status_code in (201, 204)
    r = n1.api("PUT", "/api/users/alice", json={"password": "s3cret", "tags": ""})
    assert r.status_code in (201, 204), r.text
    r = n1.api("PUT", "/api/permissions/cl-vh/alice",
               json={"configure": ".*", "write": ".*", "read": ".*"})
    assert r.status_code in (201, 204), r.text

    for other in (n2, n3):
        wait_for(lambda: exists(other, "exchange", "cl.x"), f"cl.x on node {other.id}")
        wait_for(lambda: exists(other, "queue", "cl.q"), f"cl.q on node {other.id}")
        # The binding: a publish on that node reaches the queue's copy there.
        c = other.connect()
        cch = c.channel()
        cch.confirm_delivery()
        cch.basic_publish("cl.x", "a.b", b"hello", mandatory=True)
        method, _, body = cch.basic_get("cl.q", auto_ack=True)
        assert body == b"hello"
        c.close()
        # The user logs in to the new vhost on that node.
        wait_for(lambda: other.connect("alice", "s3cret", "cl-vh").close() or True,
                 f"alice on node {other.id}")
        bindings = other.api("GET", "/api/bindings/%2F").json()
        assert any(b["source"] == "cl.x" and b["destination"] == "cl.q" for b in bindings)

    # Deletion is replicated too.
    conn = n2.connect()
    conn.channel().queue_delete("cl.q")
    conn.close()
    for other in (n1, n3):
        wait_for(lambda: not exists(other, "queue", "cl.q"), f"cl.q gone on node {other.id}")

    st = n3.status()
    assert st["clustered"] and st["leader"] == 1 and st["term"] >= 1
    assert {m["id"] for m in st["members"]} == {1, 2, 3}


def test_leader_failover_minority_refusal_and_catch_up(cluster3):
    nodes = {n.id: n for n in cluster3}
    leader = nodes[nodes[1].status()["leader"]]
    leader.kill()
    survivors = [n for n in cluster3 if n is not leader]
    wait_for(lambda: survivors[0].status()["leader"] in {s.id for s in survivors},
             "a new leader among the survivors")

    # Definitions still change with 2 of 3, declared on either survivor.
    conn = survivors[1].connect()
    conn.channel().queue_declare("cl.after-failover", durable=True)
    conn.close()
    wait_for(lambda: exists(survivors[0], "queue", "cl.after-failover"),
             "the queue on the other survivor")

    # Isolate the last node: a definition change is refused with RabbitMQ's 541 wording.
    alone, gone = survivors
    gone.kill()
    conn = alone.connect()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        ch.queue_declare("cl.minority", durable=True)
    assert ei.value.reply_code == 541, ei.value
    assert "because the metadata store operation timed out" in ei.value.reply_text
    assert not exists(alone, "queue", "cl.minority")
    r = alone.api("PUT", "/api/vhosts/cl-minority")
    assert r.status_code == 500 and "metadata store" in r.text, r.text

    # The first killed node comes back on its data dir and cluster port: a quorum again,
    # and it catches up with what was declared while it was down.
    leader.start([])
    wait_for(lambda: exists(leader, "queue", "cl.after-failover"), "catch-up on the restarted node")
    conn = alone.connect()
    conn.channel().queue_declare("cl.healed", durable=True)
    conn.close()
    wait_for(lambda: exists(leader, "queue", "cl.healed"), "a change after healing")


def test_wrong_secret_is_refused_and_logged(nodes):
    root, made = nodes
    n1 = Node(root, 1)
    made.append(n1)
    n1.start([])
    wait_for(lambda: n1.status()["leader"] == 1, "node 1 to form a cluster")
    intruder = Node(root, 2, secret="not-the-secret")
    made.append(intruder)
    intruder.start([n1.seed()])
    wait_for(lambda: "presented a wrong cluster secret" in n1.log(), "the refusal in node 1's log")
    wait_for(lambda: "refused by seed: wrong cluster secret" in intruder.log(),
             "the refusal in the intruder's log")
    assert voters(n1) == {1}
    assert [m["id"] for m in n1.status()["members"]] == [1]


def test_single_node_reports_not_clustered(broker):
    m = wait_for(lambda: re.search(r"listening protocol=http addr=(\S+)", broker.log_text()),
                 "the HTTP listener")
    r = requests.get(f"http://{m.group(1)}/api/cluster", auth=("guest", "guest"), timeout=10)
    assert r.json() == {"clustered": False}
