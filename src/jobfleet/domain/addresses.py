"""Which network addresses an outbound callback or webhook may reach.

A job's ``callback_url`` and a notification webhook are URLs that API callers
choose, and the server connects to them. Without a guard they reach what only
the server can reach: its own loopback services, a cloud's metadata service on
link-local addresses, or the server itself. Private ranges (10/8, 172.16/12,
192.168/16, fc00::/7) stay allowed: BlueKing systems live there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# (range, why it is refused): checked in order, the first match names the reason
REFUSED: tuple[tuple[Network, str], ...] = (
    (ipaddress.ip_network("127.0.0.0/8"), "loopback"),
    (ipaddress.ip_network("::1/128"), "loopback"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local (cloud metadata)"),
    (ipaddress.ip_network("fe80::/10"), "link-local"),
    (ipaddress.ip_network("0.0.0.0/8"), "unspecified ('this network')"),
    (ipaddress.ip_network("::/128"), "unspecified"),
    (ipaddress.ip_network("224.0.0.0/4"), "multicast"),
    (ipaddress.ip_network("ff00::/8"), "multicast"),
    (ipaddress.ip_network("255.255.255.255/32"), "broadcast"),
    # the EC2 IPv6 metadata endpoint lives in a unique-local range
    (ipaddress.ip_network("fd00:ec2::254/128"), "cloud metadata"),
)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs as an operator writes them (``127.0.0.0/8``, ``::1``); ValueError names a bad one."""
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return tuple(found)


def unwrap(address: Address) -> Address:
    """The IPv4 address an IPv6 form stands for (``::ffff:a.b.c.d``, NAT64, 6to4), else itself.

    A connection to ``::ffff:127.0.0.1`` reaches 127.0.0.1; judging the IPv6 form
    alone would let it through.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        # IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks)
        if int(address) >> 32 == 0 and int(address) > 1:
            return ipaddress.IPv4Address(int(address))
    return address


def refusal(
    address: Address | str,
    *,
    allow: Sequence[Network] = (),
    own: Iterable[Address] = (),
) -> str | None:
    """Why an outbound connection to ``address`` is refused, or None when it may go.

    ``allow``: ranges the operator allowed explicitly (they win over every rule);
    ``own``: the server's own addresses.
    """
    if isinstance(address, str):
        # a zone (fe80::1%eth0) names an interface, not another address
        address = ipaddress.ip_address(address.split("%", 1)[0])
    plain = unwrap(address)
    for candidate in {address, plain}:
        if any(candidate in net for net in allow if net.version == candidate.version):
            return None
    for candidate in (plain, address):
        for net, why in REFUSED:
            if net.version == candidate.version and candidate in net:
                return f"{candidate} is {why}"
    own_set = {unwrap(a) for a in own}
    if plain in own_set:
        return f"{plain} is an address of this server"
    return None
