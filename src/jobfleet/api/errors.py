"""The one place a ``JobError`` becomes the bk-job envelope, and an unexpected failure a
logged internal error.

Handlers raise; the application's exception handler (``install``) answers. A caller that
was authenticated is on ``request.state.caller`` (``Authenticator.authenticate`` puts it
there), so a refusal is audited with who was refused.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from jobfleet.api import envelope
from jobfleet.api.auditing import refusal
from jobfleet.api.services import Services
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.logs import Spell
from jobfleet.store.database import Database
from jobfleet.store.health import Health
from jobfleet.store.outage import REPEAT_SECONDS, disk_reason, failure_path

log = logging.getLogger(__name__)

# how long the check that tells a database outage from a fault of jobfleet may take (s)
DATABASE_CHECK_SECONDS = 2.0


def request_id(request: HTTPConnection) -> str:
    """The request's ``job_request_id``: made on first use, the same for the whole request."""
    rid: str | None = getattr(request.state, "request_id", None)
    if rid is None:
        rid = uuid.uuid4().hex
        request.state.request_id = rid
    return rid


def internal(request: HTTPConnection) -> JobError:
    """What the caller is told of a failure that is not theirs; the traceback is logged.

    Call it in an ``except`` block."""
    rid = request_id(request)
    log.exception("request_failed path=%s request_id=%s", request.url.path, rid)
    return JobError(ErrorCode.INTERNAL_ERROR, f"Internal error (request {rid})")


def disk_refusal(request: HTTPConnection, failure: BaseException, db: Database) -> JobError | None:
    """What the caller is told when ``failure`` is the server's disk refusing a write
    (full, read-only), and what is logged of it (the first refusal of a spell, then a
    count a minute); None for any other failure.

    Reads still work then, so the database answers a check: without this the caller
    would get an internal error and the log a traceback per request, and the operator
    no word of what to fix."""
    why = disk_reason(failure, db.file)
    if why is None:
        return None
    _tell(
        request,
        "disk_refusals",
        "request_disk_refused",
        "path=%s reason=%s file=%s request_id=%s",
        request.url.path,
        why,
        failure_path(failure) or db.file,
        request_id(request),
    )
    # PostgreSQL's own disk is the database server's, not this server's
    whose = "The database server's disk is full" if why == "DISK_FULL" else (
        "The server cannot write to its disk (full or read-only)"
    )
    return JobError(
        ErrorCode.SERVICE_UNAVAILABLE,
        f"{whose}: nothing of this request was saved; try again once space is freed",
        http_status=503,
    )


@contextmanager
def disk_refused_as_error(request: HTTPConnection, db: Database) -> Iterator[None]:
    """Within it, the disk refusing a write is raised as :func:`disk_refusal`'s error
    (for routes without the endpoint wrapper, such as the agents'); any other failure
    goes on as it was."""
    try:
        yield
    except Exception as exc:
        refused = disk_refusal(request, exc, db)
        if refused is None:
            raise
        raise refused from None


async def unexpected(request: HTTPConnection, db: Database) -> JobError:
    """What the caller is told of a failure that is not theirs: that the service is
    unavailable while the database cannot be reached (a restart: the caller may try
    again, and the log gets one line, not a traceback per request), else an internal
    error.

    Call it in an ``except`` block."""
    failure = sys.exc_info()[1]
    refused = None if failure is None else disk_refusal(request, failure, db)
    if refused is not None:
        return refused
    try:
        await asyncio.wait_for(Health(db).ping(), DATABASE_CHECK_SECONDS)
    except asyncio.CancelledError:
        raise
    except Exception:
        _tell(
            request,
            "database_away",
            "request_database_unreachable",
            "path=%s request_id=%s",
            request.url.path,
            request_id(request),
        )
        return JobError(
            ErrorCode.SERVICE_UNAVAILABLE,
            "The database cannot be reached: try again shortly",
            http_status=503,
        )
    return internal(request)


def _spell(request: HTTPConnection, name: str) -> Spell | None:
    # the app's own (``install``): none for an app built without it
    spell: Spell | None = getattr(request.app.state, name, None)
    return spell


def _tell(request: HTTPConnection, spell: str, event: str, fields: str, *args: object) -> None:
    """One of many requests failing alike: logged as part of the app's ``spell``, and
    at debug when the spell does not name it (the caller has its id in the answer)."""
    ongoing = _spell(request, spell)
    if ongoing is None:
        log.warning(f"{event} {fields}", *args)
    elif not ongoing.failed(fields, *args):
        log.debug(f"{event} {fields}", *args)


def answered(request: HTTPConnection) -> None:
    """A request was served: the database answers again, if it did not. (A full disk
    is not told over by it: reads are served all along.)"""
    away = _spell(request, "database_away")
    if away is not None:
        away.ok()


def audited(request: HTTPConnection) -> None:
    """The handler wrote its own audit entry for this refusal: write no other."""
    request.state.refusal_audited = True


async def answer(request: Request, exc: Exception) -> Response:
    """The exception handler: a ``JobError`` as the envelope, its refusal audited."""
    assert isinstance(exc, JobError)
    if not getattr(request.state, "refusal_audited", False):
        services: Services = request.app.state.services
        await refusal(services.audit, request, exc, getattr(request.state, "caller", None))
    return envelope.error(exc, request_id(request), envelope.request_language(request))


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method) in the envelope."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 404:
        message = f"No API at {request.url.path}"
    else:
        message = str(exc.detail)
    refused = JobError(ErrorCode.BAD_REQUEST, message, http_status=exc.status_code)
    return await answer(request, refused)


async def bad_address(request: Request, exc: Exception) -> Response:
    """A console address whose typed part (an id) does not parse, in the envelope, named
    but not echoed."""
    assert isinstance(exc, RequestValidationError)
    found = exc.errors()
    where = found[0].get("loc", ()) if found else ()
    name = str(where[-1]) if where else "path"
    reason = str(found[0].get("msg", "")) if found else ""
    refused = JobError.invalid(name, reason or None)
    refused.http_status = 422
    return await answer(request, refused)


def install(app: FastAPI) -> None:
    # while the database is away every request fails alike: the first is logged with
    # its id, then one line a minute with how many failed, then the end (``answered``);
    # a busy API would otherwise write a line per request
    app.state.database_away = Spell(
        log, "request_database_unreachable", back="request_database_back", every=REPEAT_SECONDS
    )
    # and so while the disk refuses writes; reads go on meanwhile, so no request tells
    # that it is over: a refusal a minute after the last starts a new spell
    app.state.disk_refusals = Spell(log, "request_disk_refused", every=REPEAT_SECONDS)
    app.add_exception_handler(JobError, answer)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_address)
