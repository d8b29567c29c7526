"""What a hello's ``peer`` field may say."""

from __future__ import annotations

import pytest

from jobfleet.gateway.endpoint import swarm_address


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.5:7070", "127.0.0.5:7070"),
    (":7070", "127.0.0.9:7070"),
    ("[::1]:7070", "[::1]:7070"),
    ("", ""),
    (None, ""),
    (7070, ""),
    ("127.0.0.5", ""),
    ("127.0.0.5:0", ""),
    ("127.0.0.5:70000", ""),
    ("host.example:7070", ""),
    ("127.0.0.5:70a", ""),
    ("1" * 100 + ":7070", ""),
])
def test_swarm_address(value: object, expected: str) -> None:
    assert swarm_address(value, "127.0.0.9") == expected
