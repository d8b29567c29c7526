"""domain/agent_credentials.py: the ``Authorization: Agent ID:SECRET`` header."""

from __future__ import annotations

import pytest

from jobfleet.domain.agent_credentials import parse_credential


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Agent abc:s3cr:et", ("abc", "s3cr:et")),
        ("Agent  abc:secret ", ("abc", "secret")),
        (None, None),
        ("", None),
        ("Bearer abc:secret", None),
        ("agent abc:secret", None),
        ("Agent abc", None),
        ("Agent :secret", None),
        ("Agent abc:", None),
    ],
)
def test_parse_credential(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_credential(header) == expected
