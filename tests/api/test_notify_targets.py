"""A webhook's target is checked as the sender will read it: a URL it cannot send to is
refused with 1241010 when the config is saved, never an internal error or a delivery
that can never be made."""

from __future__ import annotations

import pytest

from jobfleet.api.notify import _target
from jobfleet.domain.errors import ErrorCode, JobError


@pytest.mark.parametrize("url", [
    "http://[::1/x",  # an unclosed IPv6 bracket
    "http://127.0.0.1:abc/x",
    "http://127.0.0.1:99999/x",
    "http://127.0.0.1:-1/x",
    "http://127.0.0.1:0/x",
    "http://127.0.0.1/a\nb",
    "http://127.0.0.1/a b",
    "http://127.0.0.1/a\x7fb",
])
def test_a_url_the_sender_cannot_use_is_refused(url: str) -> None:
    with pytest.raises(JobError) as caught:
        _target("webhook", url)
    assert caught.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
    assert "[target]" in caught.value.message


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook?token=a%20b",
    "https://127.0.0.1/x/y",
    "http://[::1]:8080/x",
])
def test_usual_urls_pass(url: str) -> None:
    assert _target("webhook", url) == url
