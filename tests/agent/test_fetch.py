"""The agent's stdlib HTTP requests against small loopback servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from jobfleet.agent.fetch import BadResponse, request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serving(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers, body


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, headers, body = await read_request(reader)
        answer = json.dumps({"line": line, "type": headers.get("content-type"),
                             "body": body.decode()}).encode()
        if "chunked" in line:
            writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (answer[:5], answer[5:]):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer),
                                                                               answer))
        await writer.drain()
        writer.close()

    async for url in serving(handle):
        yield url


async def test_a_json_post_and_its_answer(echo: str) -> None:
    resp = await request("POST", echo + "/enroll?x=1", body={"token": "s", "ip": "127.0.0.1"})
    assert resp.status_code == 200
    assert resp.json() == {"line": "POST /enroll?x=1 HTTP/1.1", "type": "application/json",
                           "body": '{"token":"s","ip":"127.0.0.1"}'}


async def test_a_chunked_answer(echo: str) -> None:
    resp = await request("GET", echo + "/chunked")
    assert resp.status_code == 201 and resp.json()["line"] == "GET /chunked HTTP/1.1"


async def test_what_is_not_http_is_an_os_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        writer.close()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        writer.close()

    for handler in (garbage, cut):
        async for url in serving(handler):
            with pytest.raises(BadResponse) as caught:
                await request("GET", url + "/")
            assert isinstance(caught.value, OSError)


async def test_a_refused_connection_and_a_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async for url in serving(silent):
        with pytest.raises(TimeoutError):
            await request("GET", url + "/", timeout=0.2)
    with pytest.raises(OSError):
        await request("GET", url + "/")
