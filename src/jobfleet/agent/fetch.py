"""The agent's two small HTTP requests (the bootstrap document and enrollment), in stdlib.

An agent makes these once per start at most, and they are JSON both ways; an HTTP
client library would sit in every idle agent's memory for them. One request per
connection (``Connection: close``), a bounded answer, one deadline for the whole
exchange. Failures are ``OSError``s (refused, reset, TLS, timeout), as the socket
gives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# the documents asked for here are a few KiB
MAX_ANSWER_BYTES = 1024 * 1024


def server_name(host: str, tls: ssl.SSLContext | None) -> str | None:
    """The name TLS sends (SNI) and checks: ``None`` for plain text; empty for an IP
    address when the context checks no host name (the pinned CA): TLS never sends an
    IP address as SNI, and ``ssl`` would load the IDNA codec (0.4 MiB) to encode it."""
    if tls is None:
        return None
    if not tls.check_hostname:
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return host
        return ""
    return host


class BadResponse(ConnectionError):
    """The other end did not answer in HTTP/1.1 the agent can read."""


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


async def request(
    method: str,
    url: str,
    *,
    body: Any = None,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 30.0,
) -> Response:
    """Send one request (``body`` as JSON when given) and read the whole answer."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    tls: ssl.SSLContext | None = None
    if https:
        tls = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = [
        f"{method} {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Accept: application/json",
        "Connection: close",
        f"Content-Length: {len(payload)}",
    ]
    if body is not None:
        head.append("Content-Type: application/json")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=server_name(host, tls)
        )
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
            try:
                return await _read_response(reader)
            except (asyncio.IncompleteReadError, ValueError) as exc:
                # cut short, or a line or length that is not HTTP
                raise BadResponse(f"a broken HTTP answer: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> Response:
    status_line = (await reader.readline()).decode("latin-1")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or not fields[1].isdecimal():
        raise BadResponse(f"not an HTTP answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        content = await _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_ANSWER_BYTES:
            raise BadResponse(f"an answer of {length} bytes is too large")
        content = await reader.readexactly(length)
    else:
        content = await reader.read(MAX_ANSWER_BYTES + 1)
        if len(content) > MAX_ANSWER_BYTES:
            raise BadResponse("the answer is too large")
    return Response(int(fields[1]), content)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    content = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return bytes(content)
        if len(content) + size > MAX_ANSWER_BYTES:
            raise BadResponse("the answer is too large")
        content += await reader.readexactly(size)
        await reader.readline()
