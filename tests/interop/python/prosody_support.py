"""Prosody (Debian's `prosody` package, with `lua-unbound`) started by a test as the test user,
with its own config, data, log and pid file in a temporary directory.

Ports: Prosody cannot listen on port 0 and tell us the port, so its ports are chosen by probing
bind() on 127.0.0.1 in a range outside the kernel's ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range), skipping ports that are taken, and released just
before Prosody starts; Prosody's log then confirms it listens, and a start that loses the race
fails loudly instead of passing silently.

DNS: Prosody finds other servers by DNS (SRV `_xmpp-server._tcp`, then A). With lua-unbound,
its resolver takes an `unbound = { forward = "ip@port" }` option, so the test runs a tiny DNS
server on a loopback UDP port (bound to port 0 and read back) that answers for the Tributary
domain: SRV -> 127.0.0.1 at Tributary's s2s port. No /etc/hosts or system resolver is touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

PROSODY = shutil.which("prosody") or "/usr/bin/prosody"
PROSODYCTL = shutil.which("prosodyctl") or "/usr/bin/prosodyctl"


def prosody_available() -> bool:
    """prosody and prosodyctl, and lua-unbound (Prosody's resolver that takes `forward`)."""
    import glob

    return (Path(PROSODY).exists() and Path(PROSODYCTL).exists()
            and bool(glob.glob("/usr/lib/*/lua/*/lunbound.so")))


def free_port_outside_ephemeral(exclude: tuple[int, ...] = ()) -> int:
    """A port that bind() accepts now, below the ephemeral range (so the kernel does not hand
    it to an outgoing connection meanwhile), from a random start so parallel runs spread out."""
    import random

    lo, _hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    base = max(1025, lo - 12000)
    start = random.randrange(base, lo)
    for port in list(range(start, lo)) + list(range(base, start)):
        if port in exclude:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free port below the ephemeral range")


class TinyDns:
    """Answers SRV `_xmpp-server._tcp.<domain>` (STARTTLS port, `records`), SRV
    `_xmpps-server._tcp.<domain>` (XEP-0368 direct TLS port, `tls_records`) and A `<domain>` for
    the given domains on 127.0.0.1 (UDP, port chosen by the kernel); everything else gets an
    empty answer. Also used by test_xmpp_s2s.py through `[xmpp.s2s] resolver`."""

    def __init__(self, records: dict[str, int], tls_records: dict[str, int] | None = None):
        self.records = {d.lower(): port for d, port in records.items()}
        self.tls_records = {d.lower(): port for d, port in (tls_records or {}).items()}
        self.queries: list[tuple[str, int]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self._stop = True
        self.sock.close()

    def _serve(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self._answer(data)
            except Exception:  # a malformed query gets no answer
                continue
            try:
                self.sock.sendto(reply, addr)
            except OSError:
                return

    @staticmethod
    def _name(data: bytes, i: int) -> tuple[str, int]:
        labels = []
        while data[i]:
            n = data[i]
            labels.append(data[i + 1:i + 1 + n].decode("ascii"))
            i += 1 + n
        return ".".join(labels), i + 1

    @staticmethod
    def _encode(name: str) -> bytes:
        return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"

    def _answer(self, data: bytes) -> bytes:
        qid, _flags, qd = struct.unpack("!HHH", data[:6])
        name, i = self._name(data, 12)
        qtype, qclass = struct.unpack("!HH", data[i:i + 4])
        question = data[12:i + 4]
        answers = []
        lname = name.lower().rstrip(".")
        self.queries.append((lname, qtype))
        for prefix, table in (("_xmpp-server._tcp.", self.records), ("_xmpps-server._tcp.", self.tls_records)):
            if qtype == 33 and lname.startswith(prefix):
                domain = lname[len(prefix):]
                if domain in table:
                    rdata = struct.pack("!HHH", 0, 0, table[domain]) + self._encode(domain)
                    answers.append(self._encode(name) + struct.pack("!HHIH", 33, 1, 5, len(rdata)) + rdata)
        if qtype == 1 and (lname in self.records or lname in self.tls_records):
            rdata = socket.inet_aton("127.0.0.1")
            answers.append(self._encode(name) + struct.pack("!HHIH", 1, 1, 5, len(rdata)) + rdata)
        names = set(self.records) | set(self.tls_records)
        known = lname in names or any(lname.endswith("." + d) for d in names)
        rcode = 0 if known else 3
        flags = 0x8000 | 0x0400 | 0x0100 | 0x0080 | rcode  # response, AA, RD, RA
        header = struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0)
        return header + question + b"".join(answers)


class Prosody:
    """One Prosody serving `domain`, with users created by prosodyctl."""

    def __init__(self, root: Path, domain: str, cert: Path, key: Path, dns_port: int,
                 secure_auth: bool, ca_file: Path | None = None):
        self.root, self.domain = root, domain
        self.c2s_port = free_port_outside_ephemeral()
        self.s2s_port = free_port_outside_ephemeral(exclude=(self.c2s_port,))
        self.config = root / "prosody.cfg.lua"
        self.log_path = root / "prosody.log"
        (root / "data").mkdir(parents=True, exist_ok=True)
        ca_line = f'cafile = "{ca_file}";' if ca_file else ""
        self.config.write_text(f"""
pidfile = "{root}/prosody.pid"
{"run_as_root = true" if os.geteuid() == 0 else ""}
data_path = "{root}/data"
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{self.log_path}" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
s2s_ports = {{ {self.s2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "s2s_auth_certs" }}
modules_disabled = {{ "s2s_bidi" }}
use_ipv6 = false
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
s2s_require_encryption = true
s2s_secure_auth = {"true" if secure_auth else "false"}
unbound = {{ resolvconf = false; hoststxt = false; forward = "127.0.0.1@{dns_port}" }}
ssl = {{ certificate = "{cert}"; key = "{key}"; {ca_line} }}
VirtualHost "{domain}"
""")
        self.proc: subprocess.Popen | None = None

    def ctl(self, *args: str):
        subprocess.run([PROSODYCTL, "--config", str(self.config), *args], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)

    def register(self, user: str, password: str):
        self.ctl("register", user, self.domain, password)

    def start(self, timeout: float = 20):
        self.proc = subprocess.Popen([PROSODY, "-F", "--config", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.root)
        deadline = time.monotonic() + timeout
        # Prosody logs nothing we can wait on as an event here, so the c2s port is polled by
        # connecting (bounded); a lost port race shows up as a failed start.
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.c2s_port), 0.5).close()
                socket.create_connection(("127.0.0.1", self.s2s_port), 0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"prosody did not listen:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
