"""When the console's session cookie is marked ``Secure`` (sent back over HTTPS only).

``auto`` marks it when the server itself sees the request come over HTTPS; behind a
reverse proxy that ends TLS and forwards plain HTTP the server cannot tell, so the
operator says ``always`` (every browser reaches the console over HTTPS) or ``never``.
"""

from __future__ import annotations

from starlette.requests import Request

COOKIE_SECURE_MODES = ("auto", "always", "never")


def secure_cookie(mode: str, request: Request) -> bool:
    """Whether a cookie set in answer to ``request`` is marked ``Secure``."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return request.url.scheme == "https"
