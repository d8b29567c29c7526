"""The headers every console answer carries: the page may not be framed by another
site (a framed job page lets that site steer a click on Terminate), scripts,
styles, connections and form targets are this server's own, and no answer is
sniffed as another type or names its address to another site.

Scripts run only from the package's own files: ``script-src 'self'`` has no
``'unsafe-inline'`` and no ``'unsafe-eval'``, so a script or event handler injected
into a page never runs. The pages hold no inline handler (a control names its action
in ``data-on-click``/``-submit``/``-change``/``-input``, which console.js dispatches)
and no executed inline script (the page's data sits in a
``<script type="application/json">`` element, which is read, not run); htmx runs
with ``allowEval`` off. ``style-src`` keeps ``'unsafe-inline'`` because htmx adds
its indicator styles as a ``<style>`` element. The policy also refuses a plugin,
base address or form target from anywhere else, and every connection to another
origin."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from jobfleet.api.errors import answered, unexpected
from jobfleet.api.services import Services
from jobfleet.domain.errors import JobError

POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
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
    """A console route whose every answer carries ``HEADERS``.

    A failure that is not an answer of its own (a ``JobError``, an HTTP error, a bad
    address: the application's handlers answer those) is told apart as the API tells
    it: while the database cannot be reached (PostgreSQL restarting), 1240001 with
    HTTP 503 and one warning in the log, not a 500 and a traceback per page asked."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            try:
                response = await handler(request)
            except (JobError, HTTPException, RequestValidationError):
                raise
            except Exception:
                services: Services = request.app.state.services
                raise await unexpected(request, services.db) from None
            answered(request)
            return secure(response)

        return secured
