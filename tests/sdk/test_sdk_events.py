"""A job's live events from both clients: parsing, resuming after ``since``, and
reconnecting after a dropped stream from the last event id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from jobfleet.sdk import AsyncJobClient, JobApiError, JobClient
from jobfleet.sdk._events import RECONNECTS, SseLines, SseParser, parse_sse

URL = "http://jobfleet.test"


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


STATUS = sse("status", {"job_instance_id": 7, "status": 2, "steps": []}, "0")
FIRST = sse("output", {"bk_host_id": 1, "ip": "127.0.0.1", "content": "one\n"}, "8.0.1:1")
SECOND = sse("output", {"bk_host_id": 1, "ip": "127.0.0.1", "content": "two\n"}, "8.0.1:2")
END = sse("end", {"job_instance_id": 7, "status": 3}, "8.0.1:2")


class Dropped(httpx.AsyncByteStream, httpx.SyncByteStream):
    """Some events, then the connection breaks (or, with ``drop`` False, ends)."""

    def __init__(self, chunks: list[bytes], drop: bool = True) -> None:
        self.chunks = chunks
        self.drop = drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.drop:
            raise httpx.ReadError("connection reset")


class Server:
    """The first connection drops after one output; the next ones finish the job."""

    def __init__(self) -> None:
        self.cursors: list[str | None] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/jobfleet/v1/jobs/7/events"
        assert request.url.params["hosts"] == "all"
        cursor = request.headers.get("last-event-id")
        self.cursors.append(cursor)
        headers = {"content-type": "text/event-stream"}
        if len(self.cursors) == 1 and cursor is None:
            return httpx.Response(200, headers=headers, stream=Dropped([STATUS, FIRST]))
        chunks = [STATUS, SECOND, END] if cursor == "8.0.1:1" else [STATUS, END]
        return httpx.Response(200, headers=headers, stream=Dropped(chunks, drop=False))


def contents(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["content"] for e in events if e["event"] == "output")


def test_sync_events_reconnect_from_the_last_id() -> None:
    server = Server()
    transport = httpx.MockTransport(server.handle)
    with JobClient(URL, "app", "secret", "admin", transport=transport) as client:
        events = list(client.events(7, retry_delay=0))
    assert contents(events) == "one\ntwo\n"
    assert events[-1]["event"] == "end"
    assert server.cursors == [None, "8.0.1:1"]


async def test_async_events_reconnect_and_resume_since() -> None:
    server = Server()
    transport = httpx.MockTransport(server.handle)
    async with AsyncJobClient(URL, "app", "secret", "admin", transport=transport) as client:
        events = [e async for e in client.events(7, retry_delay=0)]
        assert contents(events) == "one\ntwo\n"
        assert server.cursors == [None, "8.0.1:1"]
        again = [e async for e in client.events(7, since="8.0.1:2")]
    assert [e["event"] for e in again] == ["status", "end"]
    assert server.cursors[-1] == "8.0.1:2"


async def test_async_events_of_an_unknown_job_raise_the_api_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"result": False, "code": 1244006, "message": "Job instance 7 does not exist"}
        )

    transport = httpx.MockTransport(refuse)
    async with AsyncJobClient(URL, "app", "secret", "admin", transport=transport) as client:
        with pytest.raises(JobApiError) as caught:
            await asyncio.wait_for(anext(aiter(client.events(7))), 10)
    assert caught.value.code == 1244006


def test_parser_takes_lines_one_at_a_time() -> None:
    parser = SseParser()
    fed = [
        parser.feed(line) for line in (": keepalive", "id: 3", "event: end", 'data: {"a": 1}', "")
    ]
    assert fed[:-1] == [None] * 4
    assert fed[-1] == {"event": "end", "id": "3", "data": {"a": 1}}
    assert list(parse_sse(["data: 1", "", "data: 2", ""])) == [
        {"event": "message", "id": None, "data": 1},
        {"event": "message", "id": None, "data": 2},
    ]


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_sync_events_give_up_on_a_server_that_does_not_answer() -> None:
    attempts: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        return unreachable(request)

    transport = httpx.MockTransport(handle)
    client = JobClient(URL, "app", "secret", "admin", transport=transport)
    with client, pytest.raises(JobApiError) as caught:
        list(client.events(7, retry_delay=0))
    assert "cannot connect to http://jobfleet.test" in caught.value.message
    assert len(attempts) == RECONNECTS + 1


async def test_async_events_give_up_on_a_server_that_does_not_answer() -> None:
    transport = httpx.MockTransport(unreachable)
    async with AsyncJobClient(URL, "app", "secret", "admin", transport=transport) as client:
        with pytest.raises(JobApiError) as caught:
            await asyncio.wait_for(anext(aiter(client.events(7, retry_delay=0))), 10)
    assert "cannot connect" in caught.value.message


def test_events_give_up_on_a_stream_that_closes_without_an_event() -> None:
    def empty(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=Dropped([b"retry: 2000\n\n"], False))

    client = JobClient(URL, "app", "secret", "admin", transport=httpx.MockTransport(empty))
    with client, pytest.raises(JobApiError, match="keeps closing"):
        list(client.events(7, retry_delay=0))


def test_events_count_only_failures_in_a_row() -> None:
    # every connection brings one new event, then drops: the stream carries on to the end
    served: list[str | None] = []
    chunks = [
        sse("output", {"bk_host_id": 1, "ip": "127.0.0.1", "content": f"{n}\n"}, f"8.0.1:{n}")
        for n in range(1, RECONNECTS + 3)
    ]

    def handle(request: httpx.Request) -> httpx.Response:
        served.append(request.headers.get("last-event-id"))
        headers = {"content-type": "text/event-stream"}
        if len(served) > len(chunks):
            return httpx.Response(200, headers=headers, stream=Dropped([END], False))
        return httpx.Response(200, headers=headers, stream=Dropped([chunks[len(served) - 1]]))

    with JobClient(URL, "app", "secret", "admin", transport=httpx.MockTransport(handle)) as client:
        events = list(client.events(7, retry_delay=0))
    assert events[-1]["event"] == "end"
    assert len(served) == len(chunks) + 1


def test_event_data_that_is_not_json_is_an_api_error() -> None:
    with pytest.raises(JobApiError, match="not JSON"):
        list(parse_sse(["event: status", "data: {oops", ""]))


def test_events_split_lines_only_where_the_format_says() -> None:
    # JSON leaves U+0085, U+2028, U+2029 (and the parser sees \x1c..) unescaped in a
    # host's output; str.splitlines would cut the event there
    content = "nel\x85 ls\u2028 ps\u2029 end\n"
    data = json.dumps({"bk_host_id": 1, "ip": "127.0.0.1", "content": content}, ensure_ascii=False)
    output = f"id: 8.0.1:1\nevent: output\ndata: {data}\n\n".encode()
    # CRLF line ends, one of them cut between two chunks
    body = (STATUS + output + END).replace(b"\n", b"\r\n")
    cut = body.index(b"\r\n", len(STATUS)) + 1
    chunks = [body[:cut], body[cut:]]

    def handle(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=Dropped(chunks, drop=False))

    transport = httpx.MockTransport(handle)
    with JobClient(URL, "app", "secret", "admin", transport=transport) as client:
        events = list(client.events(7, retry_delay=0))
    assert contents(events) == content
    assert [e["event"] for e in events] == ["status", "output", "end"]

    async def read() -> list[dict[str, Any]]:
        transport = httpx.MockTransport(handle)
        async with AsyncJobClient(URL, "app", "secret", "admin", transport=transport) as client:
            return [e async for e in client.events(7, retry_delay=0)]

    assert contents(asyncio.run(read())) == content


def test_sse_lines_keep_a_cr_for_the_next_chunk() -> None:
    lines = SseLines()
    assert lines.feed("a\r") == []
    assert lines.feed("\nb\rc\n\u2028d") == ["a", "b", "c"]
    assert lines.feed("\n") == ["\u2028d"]


def test_events_ride_out_a_proxy_answering_for_a_restarting_node() -> None:
    # scaled out behind a load balancer: a restarting node's stream is a 502 for a while
    answers: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        answers.append(len(answers))
        if len(answers) <= 2:
            return httpx.Response(502, text="<html>502 Bad Gateway</html>")
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=Dropped([STATUS, FIRST, END], False))

    transport = httpx.MockTransport(handle)
    with JobClient(URL, "app", "secret", "admin", transport=transport) as client:
        events = list(client.events(7, retry_delay=0))
    assert contents(events) == "one\n" and len(answers) == 3


async def test_events_give_up_on_a_proxy_that_keeps_answering_502() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="Bad Gateway"))
    async with AsyncJobClient(URL, "app", "secret", "admin", transport=transport) as client:
        with pytest.raises(JobApiError) as caught:
            await asyncio.wait_for(anext(aiter(client.events(7, retry_delay=0))), 10)
    assert caught.value.http_status == 502


def test_events_do_not_retry_a_server_error_with_an_envelope() -> None:
    attempts: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        body = {"result": False, "code": 1244006, "message": "Job instance 7 does not exist"}
        return httpx.Response(503, json=body)

    client = JobClient(URL, "app", "secret", "admin", transport=httpx.MockTransport(handle))
    with client, pytest.raises(JobApiError, match="does not exist"):
        list(client.events(7, retry_delay=0))
    assert len(attempts) == 1
