"""The headers every console answer carries: the page may not be framed by another
site (a framed job page lets that site steer a click on Terminate), scripts,
styles, connections and form targets are this server's own, and no answer is
sniffed as another type or names its address to another site.

The pages' scripts are in the package, but the pages still hold inline handlers
(``onclick``) and small inline scripts, so ``script-src`` keeps ``'unsafe-inline'``;
what the policy takes away is a script, plugin, base address or form target from
anywhere else, and every connection to another origin."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        # htmx adds its indicator styles as a <style> element
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def secure(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class SecuredRoute(APIRoute):
    """A console route whose every answer carries ``HEADERS``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            return secure(await handler(request))

        return secured
