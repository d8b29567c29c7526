"""An address names the hosts whose ip it is, else the one host reporting it as IPv6."""

from __future__ import annotations

import ipaddress

from jobfleet.domain.host_addresses import Addresses, by_address, embedded_ipv4, may_claim
from jobfleet.domain.targets import normalize_ip


def named(*hosts: Addresses) -> dict[tuple[int, str], list[str]]:
    found = by_address(hosts, lambda h: h)
    return {pair: [f"{h[1]}" for h in hs] for pair, hs in found.items()}


def test_an_ip_names_every_host_it_is_the_ip_of_and_a_claim_never_takes_it() -> None:
    got = named((0, "127.0.0.11", None), (0, "127.0.0.12", "127.0.0.11"), (1, "127.0.0.11", None))
    assert got[(0, "127.0.0.11")] == ["127.0.0.11"]
    assert got[(1, "127.0.0.11")] == ["127.0.0.11"]


def test_an_ipv6_address_names_its_one_claimant_and_two_name_neither() -> None:
    got = named((0, "127.0.0.11", "::1"), (1, "127.0.0.12", "::1"),
                (1, "127.0.0.13", "::1"), (2, "127.0.0.14", "::1"), (2, "::1", None))
    assert got[(0, "::1")] == ["127.0.0.11"]
    assert (1, "::1") not in got
    # a host whose ip it is wins over the claim
    assert got[(2, "::1")] == ["::1"]


MAPPED = str(ipaddress.IPv6Address("::ffff:127.0.0.20"))
COMPATIBLE = str(ipaddress.IPv6Address("::127.0.0.20"))


def test_an_ipv6_form_of_an_ipv4_address_is_that_address() -> None:
    for form in (MAPPED, COMPATIBLE, "::ffff:127.0.0.20", "0:0:0:0:0:ffff:7f00:14"):
        assert embedded_ipv4(form) == "127.0.0.20", form
        assert normalize_ip(form) == "127.0.0.20", form
    # IPv6 addresses of their own, and forms that name a site or a translator
    for form in ("::", "::1", "::2", "2002:7f00:14::1", "64:ff9b::7f00:14", "127.0.0.20",
                 "fe80::ffff:7f00:14", "not an address"):
        assert embedded_ipv4(form) is None, form
    assert normalize_ip("::1") == "::1" and normalize_ip(" 127.0.0.20 ") == "127.0.0.20"


def test_a_host_claims_an_ipv4_address_in_ipv6_form_only_if_it_is_its_own() -> None:
    """No host holds ``::ffff:127.0.0.20`` as its ip: without the check, the one host
    reporting it would answer for it, in place of 127.0.0.20."""
    assert may_claim("127.0.0.20", MAPPED) and may_claim("127.0.0.20", COMPATIBLE)
    assert not may_claim("127.0.0.21", MAPPED) and not may_claim("127.0.0.21", COMPATIBLE)
    assert may_claim("127.0.0.21", "::1")
    got = named((0, "127.0.0.20", MAPPED), (0, "127.0.0.21", COMPATIBLE),
                (1, "127.0.0.22", MAPPED))
    assert got[(0, MAPPED)] == ["127.0.0.20"]
    assert (0, COMPATIBLE) not in got and (1, MAPPED) not in got
