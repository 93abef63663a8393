"""HTTP File Upload (XEP-0363) with slixmpp's xep_0363 plugin for the slot and `requests` for
the HTTP side: discovery of upload.localhost, a slot, the PUT, the GET back byte for byte; a
file over the size limit refused with <file-too-large/>, a PUT of the wrong size refused, a
slot used once only, and the per-user quota. Tributary only.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
import requests

from xmpp_support import (DOMAIN, WAIT, SlixPool, add_users, skip_unless_tributary,  # noqa: F401
                          xb, xmpp_factory)

pytestmark = [skip_unless_tributary, pytest.mark.asyncio]

UPLOAD = f"upload.{DOMAIN}"
NS = "urn:xmpp:http:upload:0"
PLUGINS = ("xep_0030", "xep_0363")


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


def slot_urls(iq) -> tuple[str, str]:
    slot = iq["http_upload_slot"]
    put, get = slot["put"]["url"], slot["get"]["url"]
    assert put.startswith("http://127.0.0.1:") and get.startswith("http://127.0.0.1:"), (put, get)
    return put, get


async def http(method: str, url: str, **kw) -> requests.Response:
    return await asyncio.to_thread(requests.request, method, url, timeout=WAIT, **kw)


async def test_upload_and_download(xb, slix):
    pw = add_users(xb, "alice")
    a = await slix.new(xb, "alice", pw["alice"], "a", plugins=PLUGINS).start()
    up = a.c.plugin["xep_0363"]
    info = await up.find_upload_service(domain=DOMAIN, timeout=WAIT)
    assert info is not None and info["from"] == UPLOAD
    values = info["disco_info"]["form"].get_values()
    assert int(values["max-file-size"]) == 10 * 1024 * 1024

    body = bytes(range(256)) * 40 + "é☃ unicode".encode()
    name = "holiday photo ☃.bin"
    res = await up.request_slot(UPLOAD, name, len(body), "application/octet-stream", timeout=WAIT)
    put, get = slot_urls(res)
    # Nothing to fetch before the PUT.
    assert (await http("GET", get)).status_code == 404
    r = await http("PUT", put, data=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    r = await http("GET", get)
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["Content-Type"] == "application/octet-stream"
    # A slot takes one PUT.
    r = await http("PUT", put, data=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code in (403, 409), r.status_code


async def test_too_large_and_wrong_size_refused(xb, slix):
    from slixmpp.exceptions import IqError

    pw = add_users(xb, "alice")
    a = await slix.new(xb, "alice", pw["alice"], "a", plugins=PLUGINS).start()
    up = a.c.plugin["xep_0363"]
    limit = 10 * 1024 * 1024
    with pytest.raises(IqError) as info:
        await up.request_slot(UPLOAD, "huge.iso", limit + 1, "application/x-iso9660-image",
                              timeout=WAIT)
    err = info.value.iq["error"]
    assert err["condition"] == "not-acceptable" and err["type"] == "modify", str(info.value.iq)
    too_large = err.xml.find(f"{{{NS}}}file-too-large")
    assert too_large is not None, str(info.value.iq)
    assert too_large.find(f"{{{NS}}}max-file-size").text == str(limit)

    # A PUT whose size is not the slot's is refused; nothing is served afterwards.
    res = await up.request_slot(UPLOAD, "a.txt", 10, "text/plain", timeout=WAIT)
    put, get = slot_urls(res)
    r = await http("PUT", put, data=b"0123456789X", headers={"Content-Type": "text/plain"})
    assert r.status_code in (400, 413), r.status_code
    assert (await http("GET", get)).status_code == 404
    # An invalid file name.
    with pytest.raises(IqError) as info:
        await up.request_slot(UPLOAD, "../etc/passwd", 10, "text/plain", timeout=WAIT)
    assert info.value.iq["error"]["condition"] == "bad-request"


async def test_quota_per_user(xmpp_factory, slix):
    from slixmpp.exceptions import IqError

    b = xmpp_factory("[xmpp]\nupload_max_file_size = 1000\nupload_quota_per_user = 1500\n")
    pw = add_users(b, "alice", "bob")
    a = await slix.new(b, "alice", pw["alice"], "a", plugins=PLUGINS).start()
    up = a.c.plugin["xep_0363"]
    res = await up.request_slot(UPLOAD, "one.txt", 1000, "text/plain", timeout=WAIT)
    put, _ = slot_urls(res)
    assert (await http("PUT", put, data=b"x" * 1000, headers={"Content-Type": "text/plain"})).status_code == 201
    with pytest.raises(IqError) as info:
        await up.request_slot(UPLOAD, "two.txt", 1000, "text/plain", timeout=WAIT)
    assert info.value.iq["error"]["condition"] == "resource-constraint", str(info.value.iq)
    # The quota is per user.
    bob = await slix.new(b, "bob", pw["bob"], "b", plugins=PLUGINS).start()
    await bob.c.plugin["xep_0363"].request_slot(UPLOAD, "two.txt", 1000, "text/plain", timeout=WAIT)
