"""The FastAPI application: every route, and errors answered with the envelope."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.dependencies import models as fastapi_models
from starlette.routing import BaseRoute

from jobfleet import __version__
from jobfleet.api import (
    accounts,
    admin,
    agent_channel,
    cron,
    cron_firings,
    docs,
    errors,
    execute,
    file_sources,
    files,
    gse,
    heal,
    health,
    host_logs,
    legacy,
    live,
    notify,
    notify_test,
    people,
    plans,
    query,
    rules,
    rules_try,
    scripts,
    sql,
    steps,
    targets,
    templates,
    topology,
    transfer,
)
from jobfleet.api.answer_headers import AnswerHeaders
from jobfleet.api.compression import CompressAnswers
from jobfleet.api.edge import BodyLimit, MergeSlashes, RequestCap
from jobfleet.api.openapi import DocumentedAPI
from jobfleet.api.route_index import RouteIndex
from jobfleet.api.routing import OWN_PREFIX
from jobfleet.api.services import Services

API_MODULES = (
    agent_channel,
    execute,
    sql,
    query,
    host_logs,
    legacy,
    gse,
    heal,
    admin,
    files,
    transfer,
    accounts,
    file_sources,
    scripts,
    templates,
    plans,
    steps,
    cron,
    cron_firings,
    rules,
    rules_try,
    notify,
    notify_test,
    topology,
    targets,
    people,
    live,
)


@functools.cache
def api_routes() -> tuple[BaseRoute, ...]:
    """The routes of ``API_MODULES``, built once per process. They hold nothing of one
    server (a handler finds its services on the request's app) and nothing changes them
    once built, so every app of the process may share them; building them (FastAPI reads
    each handler's signature and types) is most of what making an app costs."""
    router = APIRouter()
    for module in API_MODULES:
        module.register(router)
    return tuple(router.routes)


# FastAPI's module-level caches that key on the endpoint and dependency callables of
# every app it has built (4096 entries each, never cleared); see ``release_routes``
_FASTAPI_CALL_CACHES = (
    "_is_gen_callable_cached",
    "_is_async_gen_callable_cached",
    "_is_coroutine_callable_cached",
)


def release_routes() -> None:
    """Let go of the routes of apps that are done with. FastAPI caches, for the life of
    the process, facts about each endpoint and dependency callable it has seen; ours
    are closures over a server's services, so each server built in one process (the
    demo, embedding, a test suite) stayed in memory whole, engine and caches included,
    until about a hundred more had pushed it out. Clearing costs a live app only a
    recomputation on its next request; a FastAPI without these caches has nothing to
    release."""
    for name in _FASTAPI_CALL_CACHES:
        clear = getattr(getattr(fastapi_models, name, None), "cache_clear", None)
        if callable(clear):
            clear()


def create_app(
    services: Services,
    console: APIRouter | None = None,
    headers: Mapping[str, str] | None = None,
) -> FastAPI:
    """The API, and the web console's routes when ``console`` is given; ``headers``: what
    every answer carries but Swagger UI's page (the console's security headers, which
    the console's scripts read the API's answers under)."""
    app = DocumentedAPI(
        docs_url=None,
        redoc_url=None,
        title="jobfleet",
        version=__version__,
        description="Remote job execution, wire-compatible with bk-job v3",
    )
    app.state.services = services
    # straight onto the app's router, as they are: an included router would build every
    # route again
    router = app.router
    router.routes.extend(api_routes())
    health.register(router, services.probes)
    docs.register(app)
    if console is not None:
        app.include_router(console)
    limits = services.limits
    # innermost: exact paths by a look-up, not the router's scan of every route
    app.add_middleware(RouteIndex, routes=router.routes, on_error=errors.answer)
    # large answers (a 10,000-host status) in gzip for clients that accept it
    app.add_middleware(
        CompressAnswers,
        skip_prefixes=(agent_channel.AGENT_PREFIX, OWN_PREFIX + "/files"),
    )
    app.add_middleware(
        BodyLimit,
        default=limits.max_body,
        large=limits.max_file_size,
        large_prefixes=(agent_channel.BLOBS_PREFIX, OWN_PREFIX + "/files"),
    )
    # added last, so it runs first: a refused request costs nothing more
    app.add_middleware(
        RequestCap,
        limit=limits.max_api_requests,
        # agents reconnecting after a restart ask for the bootstrap document first
        exempt=(*health.PATHS, agent_channel.AGENT_PREFIX, agent_channel.BOOTSTRAP_PATH),
    )
    if headers:
        # outermost: a request refused by the cap or the body limit carries them too
        app.add_middleware(AnswerHeaders, headers=headers, skip=(docs.PAGE,))
    # before anything reads the path: the limits, the cap and the routes see one form of it
    app.add_middleware(MergeSlashes)

    @app.websocket(agent_channel.CONNECT_PATH)
    async def agent_socket(ws: WebSocket) -> None:
        await services.gateway.serve(ws)

    errors.install(app)
    return app
