"""How a notification config's webhook URL is shown to those who may not see it whole."""

from __future__ import annotations

import pytest

from jobfleet.store.notify import shown_target, shown_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.test/services/T/B/TOKEN", "https://hooks.example.test/services/******"),
        ("https://hooks.example.test/hook?key=TOKEN", "https://hooks.example.test/hook/******"),
        ("https://hooks.example.test/?key=TOKEN", "https://hooks.example.test/******"),
        ("https://hooks.example.test/hook#TOKEN", "https://hooks.example.test/hook/******"),
        ("http://127.0.0.1:8080/TOKEN/x", "http://127.0.0.1:8080/TOKEN/******"),
        # nothing past the first segment: nothing to hide
        ("https://hooks.example.test/jobs", "https://hooks.example.test/jobs"),
        ("https://hooks.example.test/jobs/", "https://hooks.example.test/jobs/"),
        ("https://hooks.example.test", "https://hooks.example.test"),
    ],
)
def test_a_url_is_shown_to_its_first_segment(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_only_a_webhook_is_masked() -> None:
    addresses = ["ops@example.org"]
    assert shown_target("email", addresses) is addresses
    assert shown_target("webhook", "https://h.test/a/b") == "https://h.test/a/******"
