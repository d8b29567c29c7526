"""An address names the hosts whose ip it is, else the one host reporting it as IPv6."""

from __future__ import annotations

from jobfleet.domain.host_addresses import Addresses, by_address


def named(*hosts: Addresses) -> dict[tuple[int, str], list[str]]:
    found = by_address(hosts, lambda h: h)
    return {pair: [f"{h[1]}" for h in hs] for pair, hs in found.items()}


def test_an_ip_names_every_host_it_is_the_ip_of_and_a_claim_never_takes_it() -> None:
    got = named((0, "127.0.0.11", None), (0, "127.0.0.12", "127.0.0.11"), (1, "127.0.0.11", None))
    assert got[(0, "127.0.0.11")] == ["127.0.0.11"]
    assert got[(1, "127.0.0.11")] == ["127.0.0.11"]


def test_an_ipv6_address_names_its_one_claimant_and_two_name_neither() -> None:
    got = named((0, "127.0.0.11", "::1"), (0, "127.0.0.12", "::ffff:127.0.0.20"),
                (0, "127.0.0.13", "::ffff:127.0.0.20"), (1, "127.0.0.14", "::ffff:127.0.0.20"))
    assert got[(0, "::1")] == ["127.0.0.11"]
    assert (0, "::ffff:127.0.0.20") not in got
    assert got[(1, "::ffff:127.0.0.20")] == ["127.0.0.14"]
