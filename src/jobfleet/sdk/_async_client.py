"""The asyncio client: the operations of ``_ops``, walked with ``httpx.AsyncClient``.

Disk reads, writes and hashing run in worker threads: never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import httpx

from jobfleet.sdk import _steps
from jobfleet.sdk._admin import AdminApi
from jobfleet.sdk._api import BkApi
from jobfleet.sdk._base import ClientBase, FlowOf, Operation
from jobfleet.sdk._events import (
    EVENTS_PATH,
    STREAM_TIMEOUT,
    Reconnects,
    SseLines,
    SseParser,
    event_query,
    retry_later,
)
from jobfleet.sdk._flow import CHUNK_SIZE
from jobfleet.sdk._heal import HealApi
from jobfleet.sdk._notify import NotifyApi
from jobfleet.sdk._ops import Flows
from jobfleet.sdk._templates import TemplateApi
from jobfleet.sdk._topology import TopologyApi
from jobfleet.sdk._transport import transport_error

P = ParamSpec("P")
T = TypeVar("T")


def _awaited(flow: FlowOf[P, T]) -> Operation[P, Coroutine[Any, Any, T]]:
    def bind(client: AsyncJobClient) -> Callable[P, Coroutine[Any, Any, T]]:
        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return await client._run(flow(client._flows, *args, **kwargs))

        return method

    return Operation(flow, bind)


class AsyncJobClient(
    ClientBase[httpx.AsyncBaseTransport],
    BkApi[Awaitable[dict[str, Any]]],
    AdminApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]], Awaitable[str]],
    TemplateApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]], Awaitable[str]],
    HealApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]], Awaitable[str]],
    NotifyApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]], Awaitable[str]],
    TopologyApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]], Awaitable[str]],
):
    """A bk-job v3 client for jobfleet on asyncio; see ``JobClient``.

    >>> async with AsyncJobClient("http://127.0.0.1:8080", "app", "secret", "admin") as c:
    ...     result = await c.execute_and_wait("uptime", hosts=["10.0.0.1"])
    """

    _http: httpx.AsyncClient

    def _connect(self, options: dict[str, Any]) -> None:
        self._http = httpx.AsyncClient(**options)

    async def __aenter__(self) -> AsyncJobClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close(self) -> None:
        await self.aclose()

    call = _awaited(Flows.call)
    admin_call = _awaited(Flows.admin_call)
    execute_and_wait = _awaited(Flows.execute_and_wait)
    wait_for_job = _awaited(Flows.wait_for_job)
    get_result = _awaited(Flows.get_result)
    get_logs = _awaited(Flows.get_logs)
    upload_file = _awaited(Flows.upload_file)
    download_file = _awaited(Flows.download_file)
    transfer_and_wait = _awaited(Flows.transfer_and_wait)

    async def events(
        self,
        job_instance_id: int,
        *,
        hosts: str | None = "all",
        since: str | None = None,
        retry_delay: float = 1.0,
    ) -> AsyncIterator[dict[str, Any]]:
        """A job's live events until it ends, as ``JobClient.events``: ``{"event", "id",
        "data"}``. ``since`` is an event id (a cursor of each host's last log sequence)
        to resume after; a dropped connection reconnects and resumes from the last id,
        and ``RECONNECTS`` failed reconnections in a row raise ``JobApiError``."""
        cursor = since
        reconnects = Reconnects(retry_delay)
        while True:
            params, headers = event_query(hosts, cursor)
            try:
                async with self._http.stream(
                    "GET",
                    EVENTS_PATH.format(job=int(job_instance_id)),
                    params=params,
                    headers=headers,
                    timeout=STREAM_TIMEOUT,
                ) as response:
                    refused = None
                    if "text/event-stream" not in response.headers.get("content-type", ""):
                        await self._read(response)
                        refused = retry_later(response)
                        if refused is None:
                            return
                    else:
                        parser = SseParser(self._max_answer_bytes)
                        lines = SseLines(self._max_answer_bytes)
                        async for text in response.aiter_text():
                            for line in lines.feed(text):
                                event = parser.feed(line)
                                if event is None:
                                    continue
                                cursor = event["id"] or cursor
                                reconnects.received()
                                yield event
                                if event["event"] == "end":
                                    return
            except httpx.TransportError as exc:
                # a dropped stream: reconnect from the last id, a few times in a row at most
                delay = reconnects.dropped(exc)
            except httpx.RequestError as exc:  # a body that cannot be decoded: no retry helps
                raise transport_error(exc, exc.request) from exc
            else:
                delay = reconnects.dropped(refused)
            await asyncio.sleep(delay)

    # --- walking a flow: await each step it yields and hand it the answer -------------

    async def _run(self, flow: _steps.Flow[T]) -> T:
        walk = _steps.Walk(flow)
        step = walk.next()
        while step is not None:
            try:
                answer = await self._do(step)
            except BaseException as exc:  # cancellation too: the flow cleans up
                step = walk.next(failure=exc)
            else:
                step = walk.next(answer)
        return walk.result

    async def _do(self, step: _steps.Step) -> Any:
        match step:
            case _steps.Send():
                return await self._send(step)
            case _steps.Blocking(fn):
                # shielded: a cancelled wait must not cut short cleaning up a download
                return await asyncio.shield(asyncio.to_thread(fn))
            case _steps.Sleep(seconds):
                return await asyncio.sleep(seconds)
            case _steps.Receive(response, sink):
                async for chunk in response.aiter_bytes(CHUNK_SIZE):
                    await asyncio.to_thread(sink.write, chunk)
                    sink.took(len(chunk))
                return None
            case _steps.Read(response):
                return await self._read(response)
            case _steps.Close(response):
                return await response.aclose()

    async def _send(self, step: _steps.Send) -> httpx.Response:
        body = None if step.upload is None else _body(step.upload)
        request = self._http.build_request(**step.request(body))
        try:
            response = await self._http.send(request, stream=True)
            if not step.stream:
                try:
                    await self._read(response)
                finally:
                    await response.aclose()
            return response
        except httpx.RequestError as exc:  # a transport failure, or a body that cannot be decoded
            raise transport_error(exc, request) from exc
        finally:
            if body is not None:
                # a server that refuses early (413) leaves the body unread: close the file now
                await body.aclose()

    async def _read(self, response: httpx.Response) -> bytes:
        budget = self._budget(response)
        async for chunk in response.aiter_bytes():
            budget.take(chunk)
        budget.keep(response)
        return response.content


async def _body(upload: _steps.UploadBody) -> AsyncGenerator[bytes, None]:
    fh = await asyncio.to_thread(upload.item.path.open, "rb")
    try:
        while not upload.done:
            yield upload.took(await asyncio.to_thread(upload.read, fh))
    finally:
        await asyncio.to_thread(fh.close)
