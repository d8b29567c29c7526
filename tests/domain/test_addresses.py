"""The outbound address guard: what a callback or webhook may reach (no socket is opened)."""

from __future__ import annotations

import ipaddress

import pytest

from jobfleet.domain.addresses import parse_networks, refusal, unwrap

LOOPBACK = parse_networks(["127.0.0.0/8"])


# The addresses below that are not loopback are only classified, never dialled.
@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.0.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fd00:ec2::254", "cloud metadata"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("255.255.255.255", "broadcast"),
    # IPv6 forms that reach an IPv4 address are judged by that address
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::127.0.0.1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),
    ("2002:7f00:1::", "loopback"),
    ("2002:a9fe:a9fe::1", "cloud metadata"),
])
def test_refused_by_default(address: str, why: str) -> None:
    reason = refusal(address)
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", [
    # private ranges are where BlueKing systems live: allowed by default (classified, never
    # dialled)
    "10.0.0.8", "172.16.5.4", "192.168.1.20", "fd12:3456::1",
    "203.0.113.10", "2001:db8::10", "::ffff:10.1.2.3",
])
def test_allowed_by_default(address: str) -> None:
    assert refusal(address) is None


def test_the_servers_own_addresses_are_refused() -> None:
    # not loopback, which is refused for that alone; classified, never dialled
    own = [ipaddress.ip_address("10.0.0.5")]
    assert "this server" in (refusal("10.0.0.5", own=own) or "")
    assert "this server" in (refusal("::ffff:10.0.0.5", own=own) or "")
    assert refusal("10.0.0.6", own=own) is None


def test_an_allowed_range_wins_over_every_rule() -> None:
    assert refusal("127.0.0.1", allow=LOOPBACK) is None
    assert refusal("::ffff:127.0.0.1", allow=LOOPBACK) is None
    # only what is allowed: ::1 is another loopback, metadata stays refused
    assert refusal("::1", allow=LOOPBACK) is not None
    assert refusal("169.254.169.254", allow=LOOPBACK) is not None  # never dialled
    assert refusal("169.254.169.254", allow=parse_networks(["169.254.169.254"])) is None
    own = [ipaddress.ip_address("10.0.0.5")]  # classified, never dialled
    assert refusal("10.0.0.5", allow=parse_networks(["10.0.0.0/8"]), own=own) is None


def test_unwrap_leaves_plain_addresses_alone() -> None:
    for text in ("127.1.2.3", "::1", "::"):
        address = ipaddress.ip_address(text)
        assert unwrap(address) == address


def test_parse_networks_names_a_bad_range() -> None:
    assert parse_networks(["127.0.0.1", "::1", "127.1.2.3/8"]) == (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("127.0.0.0/8"))
    with pytest.raises(ValueError, match="'localhost' is not an IP address or CIDR range"):
        parse_networks(["localhost"])
