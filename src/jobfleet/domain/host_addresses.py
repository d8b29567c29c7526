"""How an address names hosts: as its ip, else as the IPv6 address one agent reports.

An agent says what it likes in its hello, so its IPv6 claim never answers for a host
whose ip the address is, and two agents claiming one address name neither (a job's
``ip_list``, a log query by ip, an alert about an address all read it this way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

_Host = TypeVar("_Host")

Addresses = tuple[int, str, str | None]


def by_address(
    hosts: Iterable[_Host], addresses: Callable[[_Host], Addresses]
) -> dict[tuple[int, str], list[_Host]]:
    """``hosts`` by (cloud, address): every host whose ip it is, else the one host
    reporting it as IPv6. ``addresses`` gives a host's (cloud, ip, ipv6)."""
    listed = [(addresses(h), h) for h in hosts]
    found: dict[tuple[int, str], list[_Host]] = {}
    for (cloud, ip, _v6), h in listed:
        found.setdefault((cloud, ip), []).append(h)
    claims: dict[tuple[int, str], list[_Host]] = {}
    for (cloud, _ip, v6), h in listed:
        if v6 and (cloud, v6) not in found:
            claims.setdefault((cloud, v6), []).append(h)
    for pair, claimants in claims.items():
        if len(claimants) == 1:
            found[pair] = claimants
    return found
