"""The outbound guard resolves once, checks, and sends to the checked address (no request
leaves this process: the transport is an in-memory one)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress

import httpx
import pytest

from jobfleet.domain.addresses import parse_networks
from jobfleet.engine.outbound import Outbound, Refused, own_addresses


def recorder() -> tuple[list[httpx.Request], httpx.AsyncClient]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    return seen, httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_sends_to_the_checked_address_with_the_original_name() -> None:
    seen, client = recorder()
    guard = Outbound(parse_networks(["127.0.0.0/8"]))
    async with client:
        resp = await guard.post(client, "https://localhost:8443/hook?a=1", content=b"{}",
                                headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    (request,) = seen
    assert request.url.host == "127.0.0.1" and request.url.port == 8443
    assert request.url.raw_path == b"/hook?a=1"
    assert request.headers["host"] == "localhost:8443"
    assert request.extensions["sni_hostname"] == "localhost"


# refused by the guard before any request; the in-memory transport would record one
@pytest.mark.parametrize("url", [
    "http://localhost/x", "http://127.0.0.1/x", "http://[::ffff:127.0.0.1]/x",
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x", "http://0.0.0.0/x",
    "http://127.1/x",
])
async def test_refused_urls_send_nothing(url: str) -> None:
    seen, client = recorder()
    async with client:
        with pytest.raises(Refused, match="not an allowed destination"):
            await Outbound().post(client, url, content=b"", headers={})
    assert seen == []


async def test_own_addresses_are_refused() -> None:
    seen, client = recorder()
    # not loopback, which is refused for that alone; the guard refuses it, nothing dials
    guard = Outbound(own=[ipaddress.ip_address("10.9.8.7")])
    async with client:
        with pytest.raises(Refused, match="address of this server"):
            await guard.post(client, "http://10.9.8.7:9000/x", content=b"", headers={})
    assert seen == []


def test_own_addresses_come_from_the_kernel() -> None:
    found = own_addresses("127.0.0.5")
    assert ipaddress.ip_address("127.0.0.5") in found
    assert ipaddress.ip_address("127.0.0.1") in found


# a URL stored before the API checked it as the sender does: refused, so that its
# delivery fails for good instead of stopping every pass of the outbox loop
@pytest.mark.parametrize("url", [
    "http://127.0.0.1:abc/x", "http://127.0.0.1:99999/x", "http://127.0.0.1:-1/x",
    "http://127.0.0.1:0/x", "http://127.0.0.1/a\nb",
])
async def test_urls_that_cannot_be_sent_to_are_refused(url: str) -> None:
    seen, client = recorder()
    async with client:
        with pytest.raises(Refused, match="not a usable URL"):
            await Outbound(parse_networks(["127.0.0.0/8"])).post(
                client, url, content=b"", headers={})
    assert seen == []


class Dribbler:
    """A loopback server that answers 200 and then a body without end, a little at a time:
    a receiver that keeps every read of the sender within its timeout."""

    def __init__(self, *, slow_head: bool = False) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.slow_head = slow_head

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n")
            while self.slow_head:
                # header lines without end, each within the read timeout
                writer.write(b"X-Wait: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.1)
            writer.write(b"\r\n")
            while True:
                writer.write(b"x" * 65536)
                await writer.drain()
                await asyncio.sleep(0.05)

    async def __aenter__(self) -> Dribbler:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), 1)


async def post_to(hook: Dribbler, still: str) -> asyncio.Future[httpx.Response]:
    """A post to ``hook`` that ended within 20 s (else it is cancelled and the test fails
    saying what it was ``still`` doing)."""
    guard = Outbound(parse_networks(["127.0.0.0/8"]))
    async with httpx.AsyncClient(timeout=0.5) as client:
        sent = asyncio.ensure_future(guard.post(
            client, f"http://127.0.0.1:{hook.port}/hook", content=b"{}", headers={}))
        done, _ = await asyncio.wait([sent], timeout=20)
        if not done:
            sent.cancel()
        assert done, f"the post was still {still}"
        return sent


async def test_an_endless_answer_is_not_read_and_the_exchange_ends() -> None:
    # the sender needs the status only: it neither reads the body nor waits for it
    async with Dribbler() as hook:
        sent = await post_to(hook, "reading the answer")
        assert sent.result().status_code == 200


async def test_an_answer_whose_head_never_ends_times_out() -> None:
    async with Dribbler(slow_head=True) as hook:
        sent = await post_to(hook, "waiting for the answer's head")
        with pytest.raises(httpx.TimeoutException):
            sent.result()
