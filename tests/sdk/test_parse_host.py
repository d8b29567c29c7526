"""Host arguments: plain IPs, cloud-prefixed IPs and IPv6 addresses."""

from __future__ import annotations

import ipaddress
import re

import pytest

from jobfleet.sdk._flow import parse_host


@pytest.mark.parametrize(("spec", "expected"), [
    ("127.0.0.1", (0, "127.0.0.1")),
    ("2:127.0.0.1", (2, "127.0.0.1")),
    ("::1", (0, "::1")),
    ("1:[::1]", (1, "::1")),
    ("::ffff:127.0.0.5", (0, "::ffff:127.0.0.5")),
    ("3:[::ffff:127.0.0.5]", (3, "::ffff:127.0.0.5")),
    # also "0" and "0::1", but a bare address always wins
    ("0:0::1", (0, "0:0::1")),
    (" 127.0.0.9 ", (0, "127.0.0.9")),
])
def test_parse_host(spec: str, expected: tuple[int, str]) -> None:
    got = parse_host(spec)
    assert (got["bk_cloud_id"], got["ip"]) == expected


def test_default_cloud() -> None:
    assert parse_host("127.0.0.1", 5) == {"bk_cloud_id": 5, "ip": "127.0.0.1"}


def test_the_docstring_examples_are_loopback_addresses_that_parse_as_it_says() -> None:
    examples = re.findall(r"``([^`]+)``", parse_host.__doc__ or "")
    hosts = [e for e in examples if e[0].isdigit() or e.startswith(":")]
    assert len(hosts) >= 4, examples
    for spec in hosts:
        assert ipaddress.ip_address(parse_host(spec)["ip"]).is_loopback, spec
