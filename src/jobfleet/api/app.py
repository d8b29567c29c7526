"""The FastAPI application: every route, and errors answered with the envelope."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, FastAPI, WebSocket
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from jobfleet import __version__
from jobfleet.api import (
    accounts,
    admin,
    agent_channel,
    cron,
    envelope,
    execute,
    files,
    gse,
    health,
    legacy,
    notify,
    plans,
    query,
    rules,
    scripts,
    steps,
    templates,
    topology,
    transfer,
)
from jobfleet.api.edge import BodyLimit, RequestCap
from jobfleet.api.openapi import DocumentedAPI
from jobfleet.api.services import Services
from jobfleet.domain.errors import ErrorCode, JobError


def create_app(services: Services) -> FastAPI:
    app = DocumentedAPI(
        title="jobfleet",
        version=__version__,
        description="Remote job execution, wire-compatible with bk-job v3",
    )
    app.state.services = services
    router = APIRouter()
    for module in (
        agent_channel,
        execute,
        query,
        legacy,
        gse,
        admin,
        files,
        transfer,
        accounts,
        scripts,
        templates,
        plans,
        steps,
        cron,
        rules,
        notify,
        topology,
    ):
        module.register(router)
    health.register(router, services.probes)
    app.include_router(router)
    limits = services.limits
    app.add_middleware(
        BodyLimit,
        default=limits.max_body,
        large=limits.max_file_size,
        large_prefixes=(
            files.PREFIX + "/agents/blobs/",
            files.PREFIX + "/files/upload/",
            files.PREFIX + "/files",
        ),
    )
    # added last, so it runs first: a refused request costs nothing more
    app.add_middleware(
        RequestCap,
        limit=limits.max_api_requests,
        # agents reconnecting after a restart ask for the bootstrap document first
        exempt=(*health.PATHS, files.PREFIX + "/agents/", agent_channel.BOOTSTRAP_PATH),
    )

    @app.websocket("/api/jobfleet/v1/agents/connect")
    async def agent_socket(ws: WebSocket) -> None:
        await services.gateway.serve(ws)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 404:
            message = f"No API at {request.url.path}"
        else:
            message = str(exc.detail)
        return envelope.error(
            JobError(ErrorCode.BAD_REQUEST, message, http_status=exc.status_code), uuid.uuid4().hex
        )

    return app
