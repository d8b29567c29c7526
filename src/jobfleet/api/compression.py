"""gzip for large answers, to clients that say they accept it (``Accept-Encoding``).

A finished 10,000-host job's status with every host's result is about 2.6 MB of
JSON and under 150 KB in gzip. Level 1: the answers are repetitive JSON, where
the fastest level already gets most of the gain and costs a fraction of the CPU.
File bodies (already compressed, or ranged), live event streams and the agent
channel pass as they are.
"""

from __future__ import annotations

from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# smaller answers fit a packet or two either way
MINIMUM_SIZE = 4096
LEVEL = 1
UNCOMPRESSED_TYPES = (*DEFAULT_EXCLUDED_CONTENT_TYPES, "application/octet-stream")


class CompressAnswers:
    """Compresses HTTP answers except those under ``skip_prefixes`` (file transfers)."""

    def __init__(self, app: ASGIApp, *, skip_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.skip_prefixes = skip_prefixes
        self.gzip = GZipMiddleware(
            app,
            minimum_size=MINIMUM_SIZE,
            compresslevel=LEVEL,
            exclude_content_types=UNCOMPRESSED_TYPES,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.skip_prefixes):
            await self.app(scope, receive, send)
            return
        await self.gzip(scope, receive, send)
