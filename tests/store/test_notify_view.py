"""How a notification config's webhook URL is shown to those who may not see it whole."""

from __future__ import annotations

import pytest

from jobfleet.store.notify import shown_target, shown_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://127.0.0.1:9/services/T/B/TOKEN", "https://127.0.0.1:9/******"),
        ("https://127.0.0.1:9/hook?key=TOKEN", "https://127.0.0.1:9/******"),
        ("https://127.0.0.1:9/?key=TOKEN", "https://127.0.0.1:9/******"),
        ("https://127.0.0.1:9/hook#TOKEN", "https://127.0.0.1:9/******"),
        ("http://127.0.0.1:8080/TOKEN/x", "http://127.0.0.1:8080/******"),
        # a chat bot's URL whose one path segment is its whole token
        ("https://hooks.example/T0KEN123", "https://hooks.example/******"),
        ("https://hooks.example/T0KEN123/", "https://hooks.example/******"),
        # user info never shows, whatever follows
        ("https://user:TOKEN@hooks.example/", "https://hooks.example/"),
        ("https://user:TOKEN@[::1]:8443/a", "https://[::1]:8443/******"),
        # nothing past the host: nothing to hide
        ("https://127.0.0.1:9/", "https://127.0.0.1:9/"),
        ("https://127.0.0.1:9", "https://127.0.0.1:9"),
    ],
)
def test_a_url_is_shown_to_its_host(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "TOKEN" not in shown


def test_only_a_webhook_is_masked() -> None:
    addresses = ["ops@example.org"]
    assert shown_target("email", addresses) is addresses
    assert shown_target("webhook", "https://h.test/a/b") == "https://h.test/******"
