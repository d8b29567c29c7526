"""A job's live events as Server-Sent Events: ``GET /api/jobfleet/v1/jobs/{id}/events``.

Resuming is served from the store, not from a buffer of past events: a status
event is always a whole snapshot (the job, its steps and per step the host counts
by status and tag), and each output event's id is a cursor of every watched
host's last log sequence. A client that reconnects with ``Last-Event-ID`` (or
``?cursor=``) gets the current snapshot and then exactly the output past its
cursor, from whichever node it reaches. The bus only wakes the stream up, so a
lost event delays a view by at most ``REFRESH`` seconds and never loses output.

A stream outlives neither its caller's credential nor the caller's scope: both are
checked again every ``RECHECK`` seconds, and the stream ends when either is gone.

What a stream costs grows with the groups of the job and the hosts whose output
the client asks for (``hosts=1,2,3`` or ``hosts=all``, at most
``MAX_WATCHED`` per step), not with the number of hosts in the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from jobfleet.api import envelope
from jobfleet.api.auditing import audit_log_read, refusal
from jobfleet.api.auth import Caller
from jobfleet.api.params import INT32, INT64, check_range
from jobfleet.api.routing import OWN_PREFIX, Call, services_of
from jobfleet.api.scope import holds_scope
from jobfleet.api.services import Services
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import FINISHED_RUN_STATUSES
from jobfleet.store.job_views import JobViews

MAX_WATCHED = 1000
# the stream reads the store again at least this often, even with no event
REFRESH = 2.0
# events close together are read once
COALESCE = 0.1
KEEPALIVE = 15.0
# the caller's credential (a console session, a personal token) is checked again this often
RECHECK = 5.0

log = logging.getLogger(__name__)

Cursor = dict[tuple[int, int, int], int]


def parse_cursor(text: str) -> Cursor:
    """``step.count.host:seq,…`` (what an output event's id holds)."""
    cursor: Cursor = {}
    for item in text.split(","):
        key, _, seq = item.strip().partition(":")
        parts = key.split(".")
        if len(parts) != 3 or not seq:
            continue
        try:
            # step and host ids in 64 bits, the execution count and sequence in 32
            numbers = [int(p) for p in parts] + [int(seq)]
            for number, (low, high) in zip(numbers, (INT64, INT32, INT64, INT32), strict=True):
                if not low <= number <= high:
                    raise ValueError(number)
        except ValueError:
            raise JobError.invalid("Last-Event-ID", "not a cursor of this stream") from None
        cursor[(numbers[0], numbers[1], numbers[2])] = numbers[3]
    return cursor


def format_cursor(cursor: Cursor) -> str:
    return ",".join(f"{s}.{c}.{h}:{q}" for (s, c, h), q in sorted(cursor.items())) or "0"


def parse_hosts(value: str) -> set[int] | None:
    """None: every host (up to MAX_WATCHED per step)."""
    if value.strip() == "all":
        return None
    hosts: set[int] = set()
    for part in value.split(","):
        if part.strip():
            try:
                hosts.add(int(part))
            except ValueError:
                raise JobError.invalid("hosts", "host ids separated by commas, or all") from None
    if len(hosts) > MAX_WATCHED:
        raise JobError.invalid("hosts", f"at most {MAX_WATCHED} hosts")
    return hosts


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def job_for(services: Services, caller: Caller, job_id: int) -> Any:
    """The job if the caller may see it; jobs of other businesses do not exist for them."""
    job = await services.jobs.job(job_id)
    if job is None or not await holds_scope(
        services.identity, caller, job.scope_type, job.scope_id
    ):
        raise JobError(
            ErrorCode.JOB_INSTANCE_NOT_EXIST,
            f"Job instance {job_id} does not exist (or its history was purged)",
        )
    return job


class JobStream:
    """The events of one job for one client."""

    def __init__(
        self,
        services: Services,
        job_id: int,
        hosts: set[int] | None,
        cursor: Cursor,
        allowed: Callable[[], Awaitable[bool]],
    ) -> None:
        """``allowed`` says whether the caller may still see the job: a stream outlives
        neither the session or token it was opened with nor the caller's scope."""
        self.services = services
        self.allowed = allowed
        self.views = JobViews(services.db)
        self.job_id = job_id
        self.hosts = hosts
        self.cursor = cursor
        self.ips: dict[tuple[int, int], dict[int, str]] = {}
        self.last_status: bytes = b""

    async def snapshot(self) -> tuple[dict[str, Any], list[Any]]:
        job = await self.services.jobs.job(self.job_id)
        steps = await self.services.jobs.steps(self.job_id)
        step_list = []
        for s in steps:
            groups = await self.views.groups(s.id, s.execute_count)
            step_list.append(
                {
                    "step_instance_id": s.id,
                    "name": s.name,
                    "status": s.status,
                    "execute_count": s.execute_count,
                    "start_time": s.start_time,
                    "end_time": s.end_time,
                    "groups": [{"status": st, "tag": t, "count": n} for st, t, n in groups],
                }
            )
        status = int(job.status) if job is not None else 0
        return {"job_instance_id": self.job_id, "status": status, "steps": step_list}, steps

    async def output(self, steps: list[Any]) -> list[bytes]:
        out: list[bytes] = []
        for s in steps:
            if s.start_time is None and s.execute_count == 0:
                continue
            key = (s.id, s.execute_count)
            ips = self.ips.get(key)
            if ips is None:
                ids = await self.views.host_ids(s.id, s.execute_count, MAX_WATCHED * 10)
                if self.hosts is not None:
                    ids = [h for h in ids if h in self.hosts]
                ids = ids[:MAX_WATCHED]
                rows = await self.services.jobs.hosts(s.id, s.execute_count, host_ids=ids)
                ips = self.ips[key] = {int(r.bk_host_id): str(r.ip) for r in rows}
            if not ips:
                continue
            wanted = {h: self.cursor.get((s.id, s.execute_count, h), -1) for h in ips}
            for host, seq, content in await self.views.chunks_after(s.id, s.execute_count, wanted):
                self.cursor[(s.id, s.execute_count, host)] = seq
                out.append(
                    sse(
                        "output",
                        {
                            "step_instance_id": s.id,
                            "execute_count": s.execute_count,
                            "bk_host_id": host,
                            "ip": ips.get(host, ""),
                            "seq": seq,
                            "content": content,
                        },
                        format_cursor(self.cursor),
                    )
                )
        return out

    async def events(self, request: Request) -> AsyncIterator[bytes]:
        steps = await self.services.jobs.steps(self.job_id)
        topics = [f"job:{self.job_id}"] + [f"step:{s.id}" for s in steps]
        wake = asyncio.Event()
        subscription = self.services.live.subscribe(topics)

        async def pump() -> None:
            async for _event in subscription:
                wake.set()

        loop = asyncio.get_running_loop()
        pumping = loop.create_task(pump())
        idle = 0.0
        checked = loop.time()
        try:
            yield f"retry: 2000\nid: {format_cursor(self.cursor)}\n\n".encode()
            while True:
                wake.clear()
                if loop.time() - checked >= RECHECK:
                    if not await self.allowed():
                        return
                    checked = loop.time()
                status, steps = await self.snapshot()
                encoded = orjson.dumps(status)
                if encoded != self.last_status:
                    self.last_status = encoded
                    yield sse("status", status, format_cursor(self.cursor))
                for item in await self.output(steps):
                    yield item
                if status["status"] in FINISHED_RUN_STATUSES:
                    # the last output of a finished job is in the store already
                    for item in await self.output(steps):
                        yield item
                    yield sse("end", {"status": status["status"]}, format_cursor(self.cursor))
                    return
                if await request.is_disconnected():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), REFRESH)
                    idle = 0.0
                idle += REFRESH if not wake.is_set() else 0.0
                if idle >= KEEPALIVE:
                    idle = 0.0
                    yield b": keepalive\n\n"
                await asyncio.sleep(COALESCE)
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
            await subscription.aclose()  # type: ignore[attr-defined]


async def job_events(request: Request) -> Response:
    request_id = uuid.uuid4().hex
    services = services_of(request)
    caller: Caller | None = None
    try:
        params = dict(request.query_params)
        caller = await services.auth.authenticate(request, params)
        try:
            job_id = int(request.path_params["job_instance_id"])
        except ValueError:
            raise JobError.invalid("job_instance_id") from None
        check_range("job_instance_id", job_id)
        job = await job_for(services, caller, job_id)
        hosts = parse_hosts(params.get("hosts", ""))
        cursor = parse_cursor(params.get("cursor") or request.headers.get("last-event-id", ""))
        await audit_log_read(Call(request, params, caller, services), job, None, len(hosts or ()))
    except JobError as exc:
        await refusal(services.audit, request, exc, caller)
        return envelope.error(exc, request_id, envelope.request_language(request))
    async def allowed() -> bool:
        try:
            await job_for(services, await services.auth.authenticate(request, params), job.id)
        except JobError:
            return False
        return True

    stream = JobStream(services, job.id, hosts, cursor, allowed)
    return StreamingResponse(
        stream.events(request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def register(router: APIRouter) -> None:
    router.add_api_route(
        OWN_PREFIX + "/jobs/{job_instance_id}/events",
        job_events,
        methods=["GET"],
        name="job_events",
        # a stream, not an envelope: described in docs/rest-api.md, kept out of the
        # OpenAPI document (whose every operation answers one envelope)
        include_in_schema=False,
    )
