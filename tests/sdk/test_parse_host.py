"""Host arguments: plain IPs, cloud-prefixed IPs and IPv6 addresses."""

from __future__ import annotations

import pytest

from jobfleet.sdk._flow import parse_host


@pytest.mark.parametrize(("spec", "expected"), [
    ("10.0.0.1", (0, "10.0.0.1")),
    ("2:10.0.0.1", (2, "10.0.0.1")),
    ("::1", (0, "::1")),
    ("1:[::1]", (1, "::1")),
    ("2001:db8::1", (0, "2001:db8::1")),
    ("3:[2001:db8::1]", (3, "2001:db8::1")),
    ("3:2001:db8::1", (0, "3:2001:db8::1")),
    (" 10.0.0.9 ", (0, "10.0.0.9")),
])
def test_parse_host(spec: str, expected: tuple[int, str]) -> None:
    got = parse_host(spec)
    assert (got["bk_cloud_id"], got["ip"]) == expected


def test_default_cloud() -> None:
    assert parse_host("10.0.0.1", 5) == {"bk_cloud_id": 5, "ip": "10.0.0.1"}
