"""The http(s) URLs jobfleet sends to on a caller's behalf (job callbacks, notification
webhooks), checked as the sender will read them when they are saved: a URL that could
never be sent to is refused then, not failed at every delivery."""

from __future__ import annotations

from urllib.parse import urlsplit


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL a request can be sent to; None when it is."""
    if any(c.isspace() or not c.isprintable() for c in value):
        return "holds a space or a control character"
    try:
        parts = urlsplit(value)
        # a port out of range or not a number raises only when read
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return "must be an http(s) URL with a host and no user info"
    if port == 0:
        return "port 0 is not a port one can send to"
    return None
