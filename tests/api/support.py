"""What the api/ unit tests share: real stores on a migrated database, and a small
FastAPI app with the API's own routing and error handling, called in-process through httpx."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from jobfleet.api import errors
from jobfleet.api.auth import Authenticator
from jobfleet.api.routing import Call, make_endpoint
from jobfleet.api.services import Services
from jobfleet.store.audit import AuditLog
from jobfleet.store.database import Database
from jobfleet.store.identity import IdentityStore

APP, USER = "test-app", "alice"


@dataclass
class Parts:
    """The services a route of these tests may use (a subset of ``Services``)."""

    db: Database
    identity: IdentityStore
    audit: AuditLog
    auth: Authenticator
    secret: str

    def headers(self, **override: str) -> dict[str, str]:
        fields = {"bk_app_code": APP, "bk_app_secret": self.secret, "bk_username": USER}
        return {"X-Bkapi-Authorization": json.dumps({**fields, **override})}


Route = Callable[[Call], Awaitable[Any]]


def build_app(parts: Parts, routes: Mapping[str, Route]) -> FastAPI:
    """An app with ``routes`` served as the API serves its own (``make_endpoint``) at
    ``/t/<name>``, answering errors through ``api/errors.py``."""
    app = FastAPI()
    app.state.services = parts  # the routes here use only what Parts holds

    def services_of(_request: Any) -> Services:
        return parts  # type: ignore[return-value]

    router = APIRouter()
    for name, handler in routes.items():
        router.add_api_route(
            f"/t/{name}", make_endpoint(services_of, handler), methods=["GET", "POST"]
        )
    app.include_router(router)
    errors.install(app)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.1.2.3", 5000)),
        base_url="http://api.test",
    )
