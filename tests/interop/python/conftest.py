"""Fixtures for the AMQP 0-9-1 interop suite.

By default every test gets its own Tributary broker (docs/TESTING-CONTRACT.md): a fresh
config with `amqp = "127.0.0.1:0"`, a fresh data dir, the port read back from the log.

With TRIBUTARY_TEST_TARGET=rabbitmq:HOST:PORT the very same tests run against an
external RabbitMQ instead, to check that our expectations are the real broker's
behaviour; tests that need Tributary's CLI, log or process are skipped there.
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
import uuid
from pathlib import Path

import pika
import pytest

REPO = Path(__file__).resolve().parents[3]
LISTEN_RE = re.compile(r"listening protocol=amqp addr=(\S+)")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

CONFIG = """\
[listeners]
amqp = "127.0.0.1:0"
mqtt = "127.0.0.1:0"
http = "127.0.0.1:0"
xmpp = "127.0.0.1:0"
xmpps = "127.0.0.1:0"
mqtts = "127.0.0.1:0"
amqps = "127.0.0.1:0"
https = "127.0.0.1:0"
cluster = ""
xmpp_server = "127.0.0.1:0"
xmpps_server = "127.0.0.1:0"

[amqp]
heartbeat = 60
frame_max = 131072
channel_max = 2047

[log]
level = "info"
"""


def _parse_target():
    raw = os.environ.get("TRIBUTARY_TEST_TARGET", "").strip()
    if raw in ("", "tributary"):
        return ("tributary", None, None)
    m = re.fullmatch(r"rabbitmq:([^:]+):(\d+)", raw)
    if not m:
        raise pytest.UsageError(
            f"TRIBUTARY_TEST_TARGET={raw!r}: expected 'tributary' or 'rabbitmq:HOST:PORT'"
        )
    return ("rabbitmq", m.group(1), int(m.group(2)))


TARGET = _parse_target()

# If the broker could not start once, later tests fail at once instead of each waiting
# START_TIMEOUT again (a broken binary must not eat CI's time budget).
_start_failure: str | None = None


def _split_addr(addr: str):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Broker:
    """What a test may rely on, whichever broker is behind it."""

    kind = "?"
    host: str
    port: int
    data_dir: Path | None = None
    user = "guest"
    password = "guest"

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/%2F"

    def url_for(self, user: str, password: str, vhost: str = "/") -> str:
        from urllib.parse import quote

        return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}/{quote(vhost, safe='')}"

    def params(self, user=None, password=None, vhost="/", **kw) -> pika.ConnectionParameters:
        kw.setdefault("connection_attempts", 1)
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("stack_timeout", 15)
        kw.setdefault("blocked_connection_timeout", 30)
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=vhost,
            credentials=pika.PlainCredentials(user or self.user, password or self.password),
            **kw,
        )

    def connect(self, **kw) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.params(**kw))

    @property
    def is_tributary(self) -> bool:
        return self.kind == "tributary"

    def require_tributary(self, why: str = "needs the Tributary binary"):
        if not self.is_tributary:
            pytest.skip(f"{why}; target is {self.kind}")

    # Overridden by TributaryBroker.
    def add_user(self, name: str, password: str, tags=None):
        self.require_tributary("adds a user with the tributary CLI")

    def log_text(self) -> str:
        self.require_tributary("reads the broker log")
        return ""

    def signal(self, sig):
        self.require_tributary("signals the broker process")


class ExternalRabbitMQ(Broker):
    kind = "rabbitmq"

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port


class TributaryBroker(Broker):
    kind = "tributary"

    def __init__(self, root: Path):
        self.root = root
        self.bin = Path(os.environ.get("TRIBUTARY_BIN", REPO / "target" / "debug" / "tributary"))
        self.data_dir = root / "data"
        self.config_path = root / "tributary.toml"
        self.log_path = root / "broker.log"
        self.proc: subprocess.Popen | None = None
        self._log_lock = threading.Lock()
        self._lines: list[str] = []
        self._listening = threading.Event()
        self._addr: str | None = None
        self._reader: threading.Thread | None = None
        self.stopped_by_test = False
        self.extra_config = ""  # TOML appended to the default config (set before start)
        self.config_text: str | None = None  # or a whole config of its own (set before start)

    # -- process -----------------------------------------------------------------
    def start(self):
        global _start_failure
        if _start_failure is not None:
            pytest.fail(f"broker failed to start earlier in this run: {_start_failure}", pytrace=False)
        try:
            self._start()
        except BaseException as e:
            _start_failure = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise

    def _start(self):
        if not self.bin.is_file():
            pytest.fail(
                f"broker binary {self.bin} not found: run `cargo build -p tributary-server` "
                "(scripts/test does) or set TRIBUTARY_BIN",
                pytrace=False,
            )
        self.data_dir.mkdir(parents=True)
        self.config_path.write_text(self.config_text or (CONFIG + self.extra_config))
        env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
        env.pop("RUST_LOG", None)
        self.proc = subprocess.Popen(
            [str(self.bin), "serve", "--config", str(self.config_path), "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # the log is on stderr; stdout joins it in one ordered pipe
            env=env,
            cwd=self.root,
        )
        self._reader = threading.Thread(target=self._drain, name="broker-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(2)
                pytest.fail(
                    f"broker exited with {self.proc.returncode} before listening; log:\n{self.log_text()}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                self._kill()
                pytest.fail(
                    f"no `listening protocol=amqp addr=...` line within {START_TIMEOUT}s; log:\n{self.log_text()}",
                    pytrace=False,
                )
        self.host, self.port = _split_addr(self._addr)

    def _drain(self):
        assert self.proc and self.proc.stdout
        with open(self.log_path, "w", encoding="utf-8") as out:
            for raw in self.proc.stdout:  # never blocks the broker: we always read
                line = raw.decode("utf-8", "replace")
                out.write(line)
                out.flush()
                with self._log_lock:
                    self._lines.append(line)
                if self._addr is None:
                    m = LISTEN_RE.search(line)
                    if m:
                        self._addr = m.group(1)
                        self._listening.set()

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def signal(self, sig):
        assert self.proc is not None
        self.stopped_by_test = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Exit code, or None if the process is still alive after `timeout`."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> list[str]:
        """Stop the broker; returns problems found (crash, no clean SIGTERM exit, panic)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is not None and not self.stopped_by_test:
            problems.append(f"broker died during the test with exit code {self.proc.returncode}")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            code = self.wait_exit(STOP_TIMEOUT)
            if code is None:
                problems.append(f"broker still running {STOP_TIMEOUT}s after SIGTERM; SIGKILLed")
                self._kill()
            elif code != 0:
                problems.append(f"broker exited with code {code} after SIGTERM (expected 0)")
        if self._reader:
            self._reader.join(5)
        if "panicked at" in self.log_text():
            problems.append("broker log contains a panic")
        return problems

    # -- helpers -------------------------------------------------------------------
    def log_text(self) -> str:
        with self._log_lock:
            return "".join(self._lines)

    def cli(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [str(self.bin), *args, "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=dict(os.environ, NO_COLOR="1"),
        )
        if res.returncode != 0:
            pytest.fail(
                f"`tributary {' '.join(args)}` exited {res.returncode}\n"
                f"stdout: {res.stdout.decode(errors='replace')}\nstderr: {res.stderr.decode(errors='replace')}",
                pytrace=False,
            )
        return res

    def add_user(self, name: str, password: str, tags=None, permissions=(".*", ".*", ".*")):
        """`tributary user add`, then (as RabbitMQ, a new user has no permissions) the given
        configure/write/read permissions on vhost `/` unless `permissions` is None."""
        args = ["user", "add", name, password]
        if tags:
            args += ["--tags", ",".join(tags)]
        res = self.cli(*args)
        if permissions is not None:
            self.cli("user", "set_permissions", name, *permissions)
        return res


@pytest.fixture
def broker(request, tmp_path_factory):
    """A running broker for this test (see module docstring)."""
    kind, host, port = TARGET
    if kind == "rabbitmq":
        yield ExternalRabbitMQ(host, port)
        return
    root = Path(tempfile.mkdtemp(prefix="tributary-it-"))
    b = TributaryBroker(root)
    try:
        b.start()
        yield b
    finally:
        problems = b.stop()
        failed = getattr(request.node, "rep_call", None)
        keep = bool(problems) or (failed is not None and failed.failed)
        if keep:
            # Keep the log for post-mortem next to pytest's own temp files.
            dest = tmp_path_factory.mktemp("broker-log") / "broker.log"
            shutil.copy(b.log_path, dest)
        shutil.rmtree(root, ignore_errors=True)
        if problems:
            pytest.fail(
                "broker problems at teardown: " + "; ".join(problems) + f"\nlog:\n{b.log_text()[-20000:]}",
                pytrace=False,
            )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    if rep.when == "call" and rep.failed and "broker" in item.funcargs:
        b = item.funcargs["broker"]
        if isinstance(b, TributaryBroker):
            rep.sections.append(("broker log (tail)", b.log_text()[-20000:]))
    return rep


@pytest.fixture
def uniq(request, broker):
    """uniq("q") -> a name unique to this test run; on an external broker, every
    name handed out is deleted (as queue and as exchange) at teardown."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60]
    names: list[str] = []

    def make(prefix: str = "") -> str:
        name = f"it.{prefix}.{base}.{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    if broker.is_tributary or not names:
        return
    try:
        conn = broker.connect()
    except Exception:
        return
    try:
        for name in names:
            for op in ("queue_delete", "exchange_delete"):
                try:
                    ch = conn.channel()
                    getattr(ch, op)(name)
                    ch.close()
                except Exception:
                    if not conn.is_open:
                        conn = broker.connect()
    finally:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def conn(broker):
    c = broker.connect()
    yield c
    if c.is_open:
        try:
            c.close()
        except Exception:
            pass


@pytest.fixture
def ch(conn):
    return conn.channel()
