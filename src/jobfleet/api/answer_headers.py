"""Headers every HTTP answer carries, whichever part of the app (or of its middleware)
made it: the console's security headers, which its pages' scripts read answers under
too (JSON answers and errors, live event streams, downloads). Plain ASGI, so an answer
refused before routing carries them as well."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AnswerHeaders:
    """Adds ``headers`` to every answer that does not set them itself, except at the
    paths in ``skip`` (Swagger UI's page runs an inline script that the console's
    policy refuses)."""

    def __init__(
        self, app: ASGIApp, *, headers: Mapping[str, str], skip: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode()) for k, v in headers.items()]
        self.skip = frozenset(skip)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip:
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                given = list(message.get("headers", ()))
                named = {name.lower() for name, _ in given}
                given.extend(h for h in self.headers if h[0] not in named)
                message["headers"] = given
            await send(message)

        await self.app(scope, receive, sending)
