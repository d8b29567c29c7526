"""How a notification config's webhook URL is shown to those who may not see it whole."""

from __future__ import annotations

import pytest

from jobfleet.store.notify import shown_target, shown_url, shows


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://127.0.0.1:9/services/T/B/TOKEN", "https://127.0.0.1:9/******"),
        ("https://127.0.0.1:9/hook?key=TOKEN", "https://127.0.0.1:9/******"),
        ("https://127.0.0.1:9/?key=TOKEN", "https://127.0.0.1:9/******"),
        ("https://127.0.0.1:9/hook#TOKEN", "https://127.0.0.1:9/******"),
        ("http://127.0.0.1:8080/TOKEN/x", "http://127.0.0.1:8080/******"),
        # a chat bot's URL whose one path segment is its whole token
        ("https://localhost/T0KEN123", "https://localhost/******"),
        ("https://localhost/T0KEN123/", "https://localhost/******"),
        # user info never shows, whatever follows
        ("https://user:TOKEN@localhost/", "https://localhost/"),
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
    assert shown_target("webhook", "https://127.0.0.3/a/b") == "https://127.0.0.3/******"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("https://localhost:8443/******", True),  # as shown now
        ("https://localhost:8443/services/******", True),  # as shown before
        ("https://LOCALHOST:8443/services/******", True),
        ("https://localhost:8443/services/T/******", True),
        ("https://localhost/******", False),  # no port: another place
        ("https://localhost:8444/******", False),
        ("http://localhost:8443/******", False),
        ("https://127.0.0.2:8443/******", False),
        ("https://localhost:8443/serv/******", False),  # not whole segments of its path
        ("https://localhost:8443/other/******", False),
        ("https://localhost:8443/******?key=1", False),
        ("https://localhost:8443/******#x", False),
        ("https://localhost:8443/******/x", False),
        ("https://u:p@localhost:8443/******", False),
        ("https://localhost:99999/******", False),
        ("https://localhost:8443/services/T/B/TOKEN", False),
    ],
)
def test_a_url_as_shown_once_or_now_stands_for_the_stored_one(sent: str, kept: bool) -> None:
    assert shows("https://localhost:8443/services/T/B/TOKEN", sent) is kept
