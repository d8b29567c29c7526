"""The blocking client: the operations of ``_ops``, walked with ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
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
    event_query,
    parse_sse,
    retry_later,
)
from jobfleet.sdk._flow import CHUNK_SIZE
from jobfleet.sdk._heal import HealApi
from jobfleet.sdk._notify import NotifyApi
from jobfleet.sdk._ops import Flows
from jobfleet.sdk._templates import TemplateApi
from jobfleet.sdk._topology import TopologyApi
from jobfleet.sdk._transport import Method, transport_error

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(flow: FlowOf[P, T]) -> Operation[P, T]:
    def bind(client: JobClient) -> Callable[P, T]:
        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return client._run(flow(client._flows, *args, **kwargs))

        return method

    return Operation(flow, bind)


class JobClient(
    ClientBase[httpx.BaseTransport],
    BkApi[dict[str, Any]],
    AdminApi[dict[str, Any], list[dict[str, Any]], str],
    TemplateApi[dict[str, Any], list[dict[str, Any]], str],
    HealApi[dict[str, Any], list[dict[str, Any]], str],
    NotifyApi[dict[str, Any], list[dict[str, Any]], str],
    TopologyApi[dict[str, Any], list[dict[str, Any]], str],
):
    """A bk-job v3 client for jobfleet (or any bk-job API gateway).

    >>> with JobClient("http://127.0.0.1:8080", "my-app", "secret", "admin", biz=2) as c:
    ...     result = c.execute_and_wait("uptime", hosts=["10.0.0.1"])
    """

    _http: httpx.Client

    def _connect(self, options: dict[str, Any]) -> None:
        self._http = httpx.Client(**options)

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    call = _blocking(Flows.call)
    admin_call = _blocking(Flows.admin_call)
    execute_and_wait = _blocking(Flows.execute_and_wait)
    wait_for_job = _blocking(Flows.wait_for_job)
    get_result = _blocking(Flows.get_result)
    get_logs = _blocking(Flows.get_logs)
    upload_file = _blocking(Flows.upload_file)
    download_file = _blocking(Flows.download_file)
    transfer_and_wait = _blocking(Flows.transfer_and_wait)

    def events(
        self,
        job_instance_id: int,
        *,
        hosts: str | None = "all",
        since: str | None = None,
        cursor: str | None = None,
        retry_delay: float = 1.0,
    ) -> Iterator[dict[str, Any]]:
        """A job's live events until it ends: ``{"event", "id", "data"}`` with events
        ``status`` (the job, its steps, host counts per status), ``output`` (a host's
        new log chunk) and ``end``. ``since`` (or its older name ``cursor``) is an event
        id to resume after; a dropped connection reconnects and resumes from the last id.
        When ``RECONNECTS`` reconnections in a row bring no event (the server is gone, the
        address or its certificate is wrong), ``JobApiError`` is raised."""
        cursor = since or cursor
        reconnects = Reconnects(retry_delay)
        while True:
            params, headers = event_query(hosts, cursor)
            try:
                with self._http.stream(
                    "GET",
                    EVENTS_PATH.format(job=int(job_instance_id)),
                    params=params,
                    headers=headers,
                    timeout=STREAM_TIMEOUT,
                ) as response:
                    refused = None
                    if "text/event-stream" not in response.headers.get("content-type", ""):
                        self._read(response)
                        refused = retry_later(response)
                        if refused is None:
                            return
                    else:
                        lines = SseLines(self._max_answer_bytes)
                        chunks = (lines.feed(text) for text in response.iter_text())
                        every = (line for chunk in chunks for line in chunk)
                        for event in parse_sse(every, self._max_answer_bytes):
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
            time.sleep(delay)

    def _bk(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._run(self._flows._bk(name, params))

    def _admin_dict(
        self, method: Method, path: str, body: Any = None, params: Any = None
    ) -> dict[str, Any]:
        return self._run(self._flows.admin_dict(method, path, body, params))

    def _admin_list(self, path: str, params: Any = None) -> list[dict[str, Any]]:
        return self._run(self._flows.admin_list(path, params))

    def _admin_text(self, path: str, params: dict[str, Any]) -> str:
        return self._run(self._flows.admin_text(path, params))

    def _admin_send_text(self, path: str, text: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._run(self._flows.admin_send_text(path, text, params))

    # --- walking a flow: do each step it yields and hand it the answer ----------------

    def _run(self, flow: _steps.Flow[T]) -> T:
        walk = _steps.Walk(flow)
        step = walk.next()
        while step is not None:
            try:
                answer = self._do(step)
            except BaseException as exc:  # the flow decides; what it does not catch goes on
                step = walk.next(failure=exc)
            else:
                step = walk.next(answer)
        return walk.result

    def _do(self, step: _steps.Step) -> Any:
        match step:
            case _steps.Send():
                return self._send(step)
            case _steps.Blocking(fn):
                return fn()
            case _steps.Sleep(seconds):
                return time.sleep(seconds)
            case _steps.Receive(response, sink):
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    sink.write(chunk)
                    sink.took(len(chunk))
                return None
            case _steps.Read(response):
                return self._read(response)
            case _steps.Close(response):
                return response.close()

    def _send(self, step: _steps.Send) -> httpx.Response:
        body = None if step.upload is None else _body(step.upload)
        request = self._http.build_request(**step.request(body))
        try:
            response = self._http.send(request, stream=True)
            if not step.stream:
                try:
                    self._read(response)
                finally:
                    response.close()
            return response
        except httpx.RequestError as exc:  # a transport failure, or a body that cannot be decoded
            raise transport_error(exc, request) from exc
        finally:
            if body is not None:
                # a server that refuses early (413) leaves the body unread: close the file now
                body.close()

    def _read(self, response: httpx.Response) -> bytes:
        budget = self._budget(response)
        for chunk in response.iter_bytes():
            budget.take(chunk)
        budget.keep(response)
        return response.content


def _body(upload: _steps.UploadBody) -> Generator[bytes, None, None]:
    with upload.item.path.open("rb") as fh:
        while not upload.done:
            yield upload.took(upload.read(fh))
