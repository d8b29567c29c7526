"""An address names the hosts whose ip it is, else the one host reporting it as IPv6."""

from __future__ import annotations

from jobfleet.domain.host_addresses import Addresses, by_address


def named(*hosts: Addresses) -> dict[tuple[int, str], list[str]]:
    found = by_address(hosts, lambda h: h)
    return {pair: [f"{h[1]}" for h in hs] for pair, hs in found.items()}


def test_an_ip_names_every_host_it_is_the_ip_of_and_a_claim_never_takes_it() -> None:
    got = named((0, "10.0.0.1", None), (0, "10.0.0.2", "10.0.0.1"), (1, "10.0.0.1", None))
    assert got[(0, "10.0.0.1")] == ["10.0.0.1"]
    assert got[(1, "10.0.0.1")] == ["10.0.0.1"]


def test_an_ipv6_address_names_its_one_claimant_and_two_name_neither() -> None:
    got = named((0, "10.0.0.1", "fd00::1"), (0, "10.0.0.2", "fd00::2"),
                (0, "10.0.0.3", "fd00::2"), (1, "10.0.0.4", "fd00::2"))
    assert got[(0, "fd00::1")] == ["10.0.0.1"]
    assert (0, "fd00::2") not in got
    assert got[(1, "fd00::2")] == ["10.0.0.4"]
