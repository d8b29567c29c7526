"""Outbound HTTP to URLs that callers chose (job callbacks, notification webhooks).

The host name is resolved once, every address it resolves to is checked
(``domain.addresses``), and the request goes to the checked address with the
original ``Host`` header and TLS server name. Resolving again at connect time
would let a DNS answer that changes between the check and the connection (DNS
rebinding) reach an address that was never checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobfleet.domain.addresses import Address, Network, refusal

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

SIOCGIFADDR = 0x8915


class Refused(Exception):
    """The URL's address is one the server does not connect to; retrying will not help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def own_addresses(listen_host: str = "") -> set[Address]:
    """The addresses of this machine's interfaces (Linux) and ``listen_host``.

    Read from the kernel, not by resolving the host name: that could wait on DNS at start.
    """
    found: set[Address] = set()
    with contextlib.suppress(ValueError):
        found.add(ipaddress.ip_address(listen_host))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(
                    sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15])
                )
                found.add(ipaddress.IPv4Address(packed[20:24]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            with contextlib.suppress(ValueError, IndexError):
                found.add(ipaddress.IPv6Address(int(raw, 16)))
    return found


def _whole(timeout: httpx.Timeout) -> float | None:
    """How long a whole request may take: connecting, sending and reading, each at most
    its own timeout (None: no bound, as the client has none)."""
    parts = (timeout.connect, timeout.write, timeout.read)
    return None if any(t is None for t in parts) else sum(t or 0.0 for t in parts)


class Outbound:
    """Sends a request to a caller's URL only at an address that passes the guard."""

    def __init__(self, allow: Sequence[Network] = (), own: Iterable[Address] = ()) -> None:
        self.allow = tuple(allow)
        self.own = frozenset(own)

    async def resolve(self, url: httpx.URL) -> Address:
        """The checked address to connect to for ``url``; Refused if none may be used."""
        host = url.host
        try:
            addresses: list[Address] = [ipaddress.ip_address(host.split("%", 1)[0])]
        except ValueError:
            port = url.port or (443 if url.scheme == "https" else 80)
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            addresses = []
            for info in infos:
                with contextlib.suppress(ValueError):
                    address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                    if address not in addresses:
                        addresses.append(address)
        reasons = []
        for address in addresses:
            why = refusal(address, allow=self.allow, own=self.own)
            if why is None:
                return address
            reasons.append(why)
        raise Refused(
            f"{host} is not an allowed destination: {'; '.join(reasons) or 'no address'} "
            "(jobfleet server --callback-allow CIDR allows a range)"
        )

    async def checked(self, url: str) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """Where to send a request for ``url``: the checked address, the ``Host`` header
        and the TLS server name that keep the original name."""
        # httpx (rich and pygments come with it) is ~5 MiB that a server sending
        # nothing outward never needs: loaded on first use
        import httpx

        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise Refused(f"not a usable URL: {exc}") from None
        if target.scheme not in ("http", "https") or not target.host:
            raise Refused(f"{target.scheme or 'no'} scheme: only http(s) URLs are sent")
        if target.port is not None and not 0 < target.port < 65536:
            # the socket would raise past every handler of a failed delivery
            raise Refused(f"not a usable URL: port {target.port} is out of range 1-65535")
        try:
            address = await self.resolve(target)
        except OSError as exc:
            # a name that does not resolve now may later: the caller retries
            raise httpx.ConnectError(f"cannot resolve {target.host}: {exc}") from None
        extensions: dict[str, Any] = {}
        if target.scheme == "https":
            # the certificate is checked against the name, not the address
            extensions["sni_hostname"] = target.host
        host = {"Host": target.netloc.decode("ascii")}
        return target.copy_with(host=str(address)), host, extensions

    async def post(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        content: bytes,
        headers: dict[str, str],
    ) -> httpx.Response:
        """The answer's status and headers; its body is not read (a receiver could send
        one without end), and the whole exchange is bounded by the client's timeouts put
        together (each read within its timeout, a receiver could dribble for ever)."""
        import httpx

        target, host, extensions = await self.checked(url)
        try:
            async with asyncio.timeout(_whole(client.timeout)):
                async with client.stream(
                    "POST",
                    target,
                    content=content,
                    headers={**headers, **host},
                    extensions=extensions,
                ) as resp:
                    return resp
        except TimeoutError:
            raise httpx.TimeoutException("no whole answer within the time allowed") from None

    @contextlib.asynccontextmanager
    async def get(
        self, client: httpx.AsyncClient, url: str, *, headers: dict[str, str]
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET of ``url`` at a checked address."""
        target, host, extensions = await self.checked(url)
        async with client.stream(
            "GET", target, headers={**headers, **host}, extensions=extensions
        ) as resp:
            yield resp
