"""Probes and metrics: ``/healthz`` (the process answers), ``/readyz`` (it can serve:
database, schema; Redis, whose loss only degrades it), ``/metrics`` (Prometheus).

None of them needs an app's credentials, and none tells anything an outsider could
use: no addresses, no error texts, only ``ok`` and timings. ``/metrics`` asks for a
bearer token when the server has one (``metrics_token``)."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from jobfleet import __version__
from jobfleet.api import envelope
from jobfleet.api.route_index import mark_plain
from jobfleet.domain.errors import ErrorCode, JobError

PATHS = ("/healthz", "/readyz", "/metrics")


@dataclass
class Readiness:
    ready: bool
    # check name → {"ok": bool, and figures such as "latency_ms"}
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ready, but a check failed whose loss only delays work between nodes (Redis)
    degraded: bool = False


class Probes(Protocol):
    # what /metrics asks for (none: nothing)
    metrics_token: str | None

    async def readiness(self) -> Readiness: ...

    async def metrics(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        ...


def register(router: APIRouter, probes: Probes | None) -> None:
    # load balancers ask often: answered from the route index (api/route_index.py)
    @mark_plain
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    router.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)

    if probes is None:
        return

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        state = await probes.readiness()
        return JSONResponse(
            {
                "status": ("degraded" if state.degraded else "ready")
                if state.ready
                else "not ready",
                "version": __version__,
                "checks": state.checks,
            },
            status_code=200 if state.ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        token = probes.metrics_token
        if token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()
            ):
                return envelope.error(
                    JobError(
                        ErrorCode.SERVICE_AUTH_FAIL,
                        "/metrics needs the bearer token of this server (metrics_token)",
                        http_status=401,
                    ),
                    uuid.uuid4().hex,
                )
        body, content_type = await probes.metrics()
        return Response(body, media_type=content_type)
