"""Enrollment tokens carry the agent CA's fingerprint after the secret."""

from __future__ import annotations

import pytest

from jobfleet.domain import enrollment

FP = "ab" * 32


def test_a_token_splits_into_secret_and_fingerprint() -> None:
    token = enrollment.compose("s3cr_t-X", FP)
    assert token == f"s3cr_t-X.{FP}"
    assert enrollment.parse(token) == enrollment.EnrollToken("s3cr_t-X", FP)
    assert enrollment.parse(f"  {token}\n") == enrollment.EnrollToken("s3cr_t-X", FP)


def test_a_bare_secret_is_a_plain_text_token() -> None:
    assert enrollment.compose("abc", None) == "abc"
    assert enrollment.parse("abc") == enrollment.EnrollToken("abc", None)


@pytest.mark.parametrize("bad", ["", ".", f".{FP}", "a.b", f"a.{FP[:-1]}", f"a.{FP.upper()}",
                                 f"a.b.{FP}", f"a b.{FP}"])
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        enrollment.parse(bad)


def test_the_channel_composes_tokens_with_its_ca() -> None:
    assert enrollment.AgentChannel(None, None).token("abc") == "abc"
    assert enrollment.AgentChannel(None, None).plaintext
