"""A Tributary broker that a test can stop (SIGTERM), kill (SIGKILL) and start again on the
same data dir, plus small tools for the durability tests: a reader of the segment-log format
(crates/store/FORMAT.md) and a pipelined publisher with exact publisher-confirm tracking.

The fixture is named `broker` on purpose: it overrides conftest's per-test broker in the
modules that import it, so conftest's report hook still attaches the broker log (here: every
run's log, one after the other) to a failing test. Tributary only: these tests need our binary,
its data dir and its log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pamqp import commands

from amqp_raw import RawAMQP
from conftest import CONFIG, LISTEN_RE, STOP_TIMEOUT, TARGET, TributaryBroker, _split_addr

START_TIMEOUT = 30.0  # recovery of a large log happens before `listening`
STORE_OPENED_RE = re.compile(r"message store opened.*clean_shutdown=(true|false)")

skip_unless_tributary = pytest.mark.skipif(
    TARGET[0] != "tributary",
    reason="durability tests restart, kill and corrupt the broker's data dir: Tributary only",
)


class Run:
    """One broker process on the shared data dir, with its own log."""

    def __init__(self, index: int, proc: subprocess.Popen, log_path: Path):
        self.index = index
        self.proc = proc
        self.log_path = log_path
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.addr: str | None = None
        self.ended_by_test = False  # SIGTERM/SIGKILL sent by the test
        self.reader = threading.Thread(target=self._drain, name=f"broker-log-{index}", daemon=True)
        self.reader.start()

    def _drain(self):
        assert self.proc.stdout
        with open(self.log_path, "w", encoding="utf-8") as out:
            for raw in self.proc.stdout:  # always read: the broker never blocks on its log
                line = raw.decode("utf-8", "replace")
                out.write(line)
                out.flush()
                with self.cond:
                    self.lines.append(line)
                    if self.addr is None and (m := LISTEN_RE.search(line)):
                        self.addr = m.group(1)
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def text(self) -> str:
        with self.cond:
            return "".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern, timeout: float) -> re.Match | None:
        """The first log match of `pattern` (regex), waiting up to `timeout` for it."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    if m := rx.search(line):
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (not self.reader.is_alive() and seen == len(self.lines)):
                    return None
                self.cond.wait(min(left, 0.2))


class RestartableBroker(TributaryBroker):
    """TributaryBroker whose process can be stopped/killed and started again on the same
    data dir; each start is a `Run` with a fresh port (config `127.0.0.1:0`) and its own log."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.runs: list[Run] = []
        self.data_dir.mkdir(parents=True)
        self.config_path.write_text(CONFIG)

    @property
    def run(self) -> Run:
        return self.runs[-1]

    @property
    def running(self) -> bool:
        return bool(self.runs) and self.run.proc.poll() is None

    # -- process -------------------------------------------------------------------
    def start(self):
        assert not self.running, "broker already running"
        if not self.bin.is_file():
            pytest.fail(f"broker binary {self.bin} not found: run `cargo build -p tributary` "
                        "or set TRIBUTARY_BIN", pytrace=False)
        env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
        env.pop("RUST_LOG", None)
        proc = subprocess.Popen(
            [str(self.bin), "serve", "--config", str(self.config_path), "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=self.root,
        )
        run = Run(len(self.runs) + 1, proc, self.root / f"broker-run{len(self.runs) + 1}.log")
        self.runs.append(run)
        if run.wait_for(LISTEN_RE, START_TIMEOUT) is None:
            if proc.poll() is None:
                self._kill_run(run)
                why = f"no `listening protocol=amqp addr=...` line within {START_TIMEOUT}s"
            else:
                why = f"broker exited with {proc.returncode} before listening"
            pytest.fail(f"run {run.index}: {why}; log:\n{run.text()[-20000:]}", pytrace=False)
        self.host, self.port = _split_addr(run.addr)
        return run

    def _kill_run(self, run: Run):
        run.ended_by_test = True
        if run.proc.poll() is None:
            run.proc.kill()
        run.proc.wait(STOP_TIMEOUT)
        run.reader.join(5)

    def terminate(self):
        """SIGTERM; the broker must exit 0 within STOP_TIMEOUT (a clean stop)."""
        run = self.run
        assert run.proc.poll() is None, f"broker run {run.index} already exited ({run.proc.returncode})"
        run.ended_by_test = True
        run.proc.send_signal(signal.SIGTERM)
        try:
            code = run.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill_run(run)
            pytest.fail(f"broker still running {STOP_TIMEOUT}s after SIGTERM; log:\n{run.text()[-20000:]}",
                        pytrace=False)
        run.reader.join(5)
        assert code == 0, f"broker exited {code} after SIGTERM; log:\n{run.text()[-20000:]}"

    def kill(self):
        """SIGKILL: an unclean stop (nothing the broker can do about it)."""
        run = self.run
        assert run.proc.poll() is None, f"broker run {run.index} already exited ({run.proc.returncode})"
        self._kill_run(run)
        assert run.proc.returncode == -signal.SIGKILL, run.proc.returncode

    def restart(self, how: str) -> Run:
        """how: "term" (clean) or "kill" (SIGKILL); then start on the same data dir."""
        {"term": self.terminate, "kill": self.kill}[how]()
        return self.start()

    # conftest's TributaryBroker API, per run
    def signal(self, sig):
        self.run.ended_by_test = True
        self.run.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT):
        try:
            return self.run.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self) -> str:
        return "".join(f"===== broker run {r.index} =====\n{r.text()}" for r in self.runs)

    def store_opened(self, run: Run | None = None) -> bool:
        """clean_shutdown= from the run's `message store opened` line."""
        run = run or self.run
        m = run.wait_for(STORE_OPENED_RE, 5)
        assert m, f"no `message store opened ... clean_shutdown=` line in run {run.index}:\n{run.text()}"
        return m.group(1) == "true"

    def finish(self) -> list[str]:
        """Stop whatever runs; problems found in any run (unexpected death, panic, unclean exit)."""
        problems = []
        for r in self.runs:
            if r.proc.poll() is not None and not r.ended_by_test:
                problems.append(f"broker run {r.index} died during the test with exit code {r.proc.returncode}")
        if self.runs and self.run.proc.poll() is None:
            run = self.run
            run.ended_by_test = True
            run.proc.send_signal(signal.SIGTERM)
            try:
                code = run.proc.wait(STOP_TIMEOUT)
                if code != 0:
                    problems.append(f"broker run {run.index} exited with code {code} after SIGTERM")
            except subprocess.TimeoutExpired:
                problems.append(f"broker run {run.index} still running {STOP_TIMEOUT}s after SIGTERM; SIGKILLed")
                self._kill_run(run)
        for r in self.runs:
            r.reader.join(5)
            if "panicked at" in r.text():
                problems.append(f"broker run {r.index} log contains a panic")
        return problems

    # -- data dir ------------------------------------------------------------------
    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    def segments(self) -> list[Path]:
        return sorted((self.store_dir / "log").glob("*.seg"))


@pytest.fixture(name="broker")
def restartable_broker(request, tmp_path_factory):
    """A running RestartableBroker; at teardown it is stopped, every run is checked for a panic
    or an unexpected death, and the logs are kept (pytest temp dir) if anything failed."""
    if TARGET[0] != "tributary":
        pytest.skip("durability tests need the Tributary binary")
    root = Path(tempfile.mkdtemp(prefix="tributary-dur-"))
    b = RestartableBroker(root)
    try:
        b.start()
        yield b
    finally:
        problems = b.finish()
        rep = getattr(request.node, "rep_call", None)
        if problems or (rep is not None and rep.failed):
            dest = tmp_path_factory.mktemp("broker-logs")
            for r in b.runs:
                shutil.copy(r.log_path, dest / r.log_path.name)
        shutil.rmtree(root, ignore_errors=True)
        if problems:
            pytest.fail("broker problems at teardown: " + "; ".join(problems)
                        + f"\nlog:\n{b.log_text()[-20000:]}", pytrace=False)


# -- segment log (crates/store/FORMAT.md, version 1) -------------------------------------
HEADER = struct.Struct("<II")  # len, crc
PUBLISH = 1


@dataclass
class Record:
    offset: int  # of the record header in the segment file
    length: int  # `len`: type byte + payload
    type: int

    @property
    def end(self) -> int:
        return self.offset + 8 + self.length

    @property
    def payload_start(self) -> int:
        return self.offset + 9


def scan_records(data: bytes) -> list[Record]:
    """Walks well-formed record headers (no CRC check); stops at the first implausible one."""
    out, pos = [], 0
    while pos + 9 <= len(data):
        length, _crc = HEADER.unpack_from(data, pos)
        if length == 0 or length > 1 << 30 or pos + 8 + length > len(data):
            break
        out.append(Record(pos, length, data[pos + 8]))
        pos += 8 + length
    return out


@dataclass
class Located:
    segment: Path
    record: Record
    body_at: int  # absolute offset of the searched bytes in the segment file


def locate_bodies(segments: list[Path], needles: list[bytes]) -> dict[bytes, Located]:
    """For each needle (a unique message body), the Publish record whose payload contains it."""
    found: dict[bytes, Located] = {}
    for seg in segments:
        data = seg.read_bytes()
        for rec in scan_records(data):
            if rec.type != PUBLISH:
                continue
            payload = data[rec.payload_start:rec.end]
            for needle in needles:
                i = payload.find(needle)
                if i >= 0:
                    assert needle not in found, f"body {needle[:40]!r} stored twice"
                    found[needle] = Located(seg, rec, rec.payload_start + i)
    return found


# -- a pipelined publisher with exact confirm tracking (raw frames) ----------------------
@dataclass
class ConfirmTally:
    acked: set[int] = field(default_factory=set)
    nacked: set[int] = field(default_factory=set)


def publish_pipelined_with_confirms(host, port, routing_key: str, bodies, window: int = 2000,
                                    timeout: float = 60.0, persistent: bool = True) -> ConfirmTally:
    """Publishes every body to the default exchange on a confirm channel, keeping at most
    `window` unconfirmed, and returns which delivery tags (1-based, in body order) were acked.
    pika's BlockingChannel waits for each confirm in turn; this is the batched equivalent."""
    props = commands.Basic.Properties(delivery_mode=2 if persistent else 1)
    tally = ConfirmTally()
    deadline = time.monotonic() + timeout
    with RawAMQP(host, port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send(commands.Confirm.Select(), 1)
        raw.expect(commands.Confirm.SelectOk)
        settled = 0  # highest tag below which everything is acked or nacked

        def settle():
            nonlocal settled
            _, frame = raw.recv_frame(max(0.001, deadline - time.monotonic()))
            if isinstance(frame, (commands.Basic.Ack, commands.Basic.Nack)):
                dest = tally.acked if isinstance(frame, commands.Basic.Ack) else tally.nacked
                tags = range(settled + 1, frame.delivery_tag + 1) if frame.multiple else [frame.delivery_tag]
                for t in tags:
                    if t not in tally.acked and t not in tally.nacked:
                        dest.add(t)
                while settled + 1 in tally.acked or settled + 1 in tally.nacked:
                    settled += 1
            elif isinstance(frame, commands.Channel.Close):
                raise AssertionError(f"channel closed by the broker: {frame!r}")

        sent = 0
        for body in bodies:
            raw.publish(1, "", routing_key, body, properties=props)
            sent += 1
            while sent - settled >= window:
                settle()
        while settled < sent:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sent - settled} confirms missing after {timeout}s")
            settle()
        raw.connection_close()
    return tally
