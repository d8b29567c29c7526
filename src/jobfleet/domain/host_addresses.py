"""How an address names hosts: as its ip, else as the IPv6 address one agent reports.

An agent says what it likes in its hello, so its IPv6 claim never answers for a host
whose ip the address is, and two agents claiming one address name neither (a job's
``ip_list``, a log query by ip, an alert about an address all read it this way).

An IPv6 address that spells an IPv4 one (``::ffff:a.b.c.d``, IPv4-mapped, and the
deprecated IPv4-compatible ``::a.b.c.d``) is that IPv4 address: callers name hosts by
it as by the IPv4 form (``targets.normalize_ip`` turns one into the other), and an
agent claims it only where it is its own ip. Otherwise no host would own that form by
ip, and one agent's claim of another host's IPv4 address, so spelt, would win. 6to4,
NAT64 and Teredo addresses embed an IPv4 address too, but name a site or a
translator, not the host that address is: they stay IPv6 addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

_Host = TypeVar("_Host")


class _Addressed(Protocol):
    """A host or a step's host row: what names it."""

    @property
    def bk_host_id(self) -> Any: ...
    @property
    def bk_cloud_id(self) -> Any: ...
    @property
    def ip(self) -> Any: ...
    @property
    def ipv6(self) -> Any: ...


_AddressedHost = TypeVar("_AddressedHost", bound=_Addressed)

Addresses = tuple[int, str, str | None]


def embedded_ipv4(address: str) -> str | None:
    """The IPv4 address ``address`` spells as IPv6 (``::ffff:a.b.c.d``, ``::a.b.c.d``),
    else None; ``::`` and ``::1`` are IPv6 addresses of their own."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if not isinstance(parsed, ipaddress.IPv6Address) or parsed.scope_id:
        return None
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    # IPv4-compatible: 96 zero bits, then an IPv4 address (whose first octet is not 0,
    # which leaves ::, ::1 and the like to IPv6)
    if int(parsed) >> 32 == 0 and int(parsed) >= 1 << 24:
        return str(ipaddress.IPv4Address(int(parsed)))
    return None


def may_claim(ip: str, ipv6: str) -> bool:
    """Whether a host whose ip is ``ip`` may report ``ipv6`` as its IPv6 address: any
    IPv6 address but one that spells another IPv4 address than ``ip``."""
    # every such address begins with 80 zero bits: in normal form, with "::"
    if not ipv6.startswith("::"):
        return True
    spelt = embedded_ipv4(ipv6)
    return spelt is None or spelt == ip


def by_address(
    hosts: Iterable[_Host], addresses: Callable[[_Host], Addresses]
) -> dict[tuple[int, str], list[_Host]]:
    """``hosts`` by (cloud, address): every host whose ip it is, else the one host
    reporting it as IPv6. ``addresses`` gives a host's (cloud, ip, ipv6); a claim of
    another IPv4 address in IPv6 form (kept from before claims were checked) counts
    for nothing."""
    listed = [(addresses(h), h) for h in hosts]
    found: dict[tuple[int, str], list[_Host]] = {}
    for (cloud, ip, _v6), h in listed:
        found.setdefault((cloud, ip), []).append(h)
    claims: dict[tuple[int, str], list[_Host]] = {}
    for (cloud, ip, v6), h in listed:
        if v6 and (cloud, v6) not in found and may_claim(ip, v6):
            claims.setdefault((cloud, v6), []).append(h)
    for pair, claimants in claims.items():
        if len(claimants) == 1:
            found[pair] = claimants
    return found


def first_by_address(hosts: Iterable[_AddressedHost]) -> dict[tuple[int, str], _AddressedHost]:
    """Hosts (or a step's host rows) by (cloud, address), as a job's ``ip_list`` names
    them: of hosts sharing an ip, the first. A host listed twice counts once (twice it
    would be two claims of its IPv6 address, and name none)."""
    unique = {h.bk_host_id: h for h in hosts}
    named = by_address(unique.values(), lambda h: (h.bk_cloud_id, h.ip, h.ipv6))
    return {pair: found[0] for pair, found in named.items()}
