"""A client-side SCRAM (RFC 5802, RFC 7677) from the standard library, for the tests of
protocols whose client libraries do not speak SCRAM themselves (AMQP 0-9-1, MQTT 5).

    c = ScramClient("sha256", "alice", "secret")
    first = c.client_first()          # -> server
    final = c.client_final(server_first)  # -> server
    c.verify_server_final(server_final)   # raises if the server does not know the password
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os


class ScramClient:
    def __init__(self, hash_name: str, user: str, password: str, nonce: str | None = None):
        assert hash_name in ("sha1", "sha256")
        self.hash_name = hash_name
        self.user = user
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self._bare = ""
        self._auth_message = b""
        self._salted = b""

    @property
    def mechanism(self) -> str:
        return "SCRAM-SHA-1" if self.hash_name == "sha1" else "SCRAM-SHA-256"

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash_name).digest()

    def client_first(self) -> bytes:
        name = self.user.replace("=", "=3D").replace(",", "=2C")
        self._bare = f"n={name},r={self.nonce}"
        return ("n,," + self._bare).encode()

    def client_final(self, server_first: bytes, tamper: bool = False) -> bytes:
        fields = dict(f.split("=", 1) for f in server_first.decode().split(","))
        assert fields["r"].startswith(self.nonce), "server nonce does not extend ours"
        salt = base64.b64decode(fields["s"])
        iterations = int(fields["i"])
        self._salted = hashlib.pbkdf2_hmac(self.hash_name, self.password.encode(), salt, iterations)
        client_key = self._hmac(self._salted, b"Client Key")
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        self._auth_message = f"{self._bare},{server_first.decode()},{without_proof}".encode()
        signature = self._hmac(stored_key, self._auth_message)
        proof = bytearray(a ^ b for a, b in zip(client_key, signature))
        if tamper:
            proof[0] ^= 0x01
        return f"{without_proof},p={base64.b64encode(bytes(proof)).decode()}".encode()

    def verify_server_final(self, server_final: bytes):
        text = server_final.decode()
        assert text.startswith("v="), f"server-final-message is not a verifier: {text!r}"
        server_key = self._hmac(self._salted, b"Server Key")
        expected = self._hmac(server_key, self._auth_message)
        assert base64.b64decode(text[2:]) == expected, "server signature does not verify"
