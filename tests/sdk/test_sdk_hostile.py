"""The clients against a real loopback server that answers badly on purpose."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
from tests.sdk.hostile import Answer, head, hostile_server, whole

from jobfleet.sdk import AsyncJobClient, JobApiError, JobClient

ENVELOPE = b'{"result": true, "code": 0, "data": {"finished": true}}'


def endless(conn: socket.socket, request: str, body: bytes) -> None:
    # endless as far as a client with a 4 MiB limit can tell (and no more, should it
    # have none)
    conn.sendall(head("200 OK", Transfer_Encoding="chunked"))
    chunk = b" " * 65536
    for _ in range(1024):
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.sendall(b"0\r\n\r\n")


def dripping(conn: socket.socket, request: str, body: bytes) -> None:
    # a valid envelope, a byte at a time: each read is quick, the whole never ends in time
    padded = b" " * 40 + ENVELOPE
    conn.sendall(head("200 OK", Content_Length=str(len(padded))))
    for byte in padded:
        conn.sendall(bytes([byte]))
        time.sleep(0.03)


def test_an_endless_answer_is_cut_off() -> None:
    with hostile_server(endless) as server:
        client = JobClient(server.url, "a", "s", "u", biz=2, max_answer_bytes=4 * 1024 * 1024)
        with client, pytest.raises(JobApiError, match="larger than 4194304 bytes") as caught:
            client.get_job_instance_status(1)
    assert caught.value.code == -1


async def test_async_an_endless_answer_is_cut_off() -> None:
    with hostile_server(endless) as server:
        client = AsyncJobClient(server.url, "a", "s", "u", biz=2, max_answer_bytes=4 * 1024 * 1024)
        async with client:
            with pytest.raises(JobApiError, match="larger than"):
                await client.get_job_instance_status(1)


# the read bound is what is tested: a loaded machine may take longer than it to connect
DRIP_TIMEOUT = httpx.Timeout(1, connect=30)


def test_an_answer_that_drips_in_ends_at_the_timeout() -> None:
    with (
        hostile_server(dripping) as server,
        JobClient(server.url, "a", "s", "u", biz=2, timeout=DRIP_TIMEOUT) as client,
        pytest.raises(JobApiError, match="timed out reading the answer"),
    ):
        client.get_job_instance_status(1)


async def test_async_an_answer_that_drips_in_ends_at_the_timeout() -> None:
    with hostile_server(dripping) as server:
        async with AsyncJobClient(server.url, "a", "s", "u", biz=2, timeout=DRIP_TIMEOUT) as client:
            with pytest.raises(JobApiError, match="timed out reading the answer"):
                await client.get_job_instance_status(1)


def envelope_of(data: str) -> bytes:
    return b'{"result": true, "code": 0, "data": ' + data.encode() + b"}"


SUBMITTED = envelope_of('{"job_instance_id": 7, "step_instance_id": 70}')


def answers(by_api: dict[str, bytes]) -> Answer:
    """Each bk-job API's answer, by its name in the request line."""

    def answer(conn: socket.socket, request: str, body: bytes) -> None:
        name = request.split()[1].split("?")[0].rsplit("/", 1)[-1]
        text = by_api[name]
        conn.sendall(head("200 OK", Content_Length=str(len(text))) + text)

    return answer


@pytest.mark.parametrize(
    ("submitted", "status"),
    [
        # numbers past what a float holds
        (envelope_of('{"job_instance_id": 1e400, "step_instance_id": 70}'), ENVELOPE),
        # a host's status that is no number, a step list of numbers, a job that is a list
        (
            SUBMITTED,
            envelope_of(
                '{"finished": true, "job_instance": {"status": 3}, "step_instance_list": [{'
                '"step_instance_id": 70, "status": 3, "step_ip_result_list": [{"status": "ok"}]}]}'
            ),
        ),
        (SUBMITTED, envelope_of('{"finished": true, "step_instance_list": [1, 2]}')),
        (
            SUBMITTED,
            envelope_of(
                '{"finished": true, "job_instance": [1], '
                '"step_instance_list": [{"step_instance_id": 70}]}'
            ),
        ),
        (
            SUBMITTED,
            envelope_of(
                '{"finished": true, "job_instance": {"status": "x"}, '
                '"step_instance_list": [{"step_instance_id": 70}]}'
            ),
        ),
    ],
)
def test_a_malformed_answer_is_an_api_error(submitted: bytes, status: bytes) -> None:
    by_api = {"fast_execute_script": submitted, "get_job_instance_status": status}
    with (
        hostile_server(answers(by_api)) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
        pytest.raises(JobApiError, match=r"malformed|without job/step ids") as caught,
    ):
        client.execute_and_wait("echo", hosts=["127.0.0.1"], poll_interval=0)
    assert caught.value.code == -1
    assert "fast_execute_script" in server.requests[0]


@pytest.mark.parametrize(
    "body",
    [
        b'{"result": false, "code": 1e400, "message": "no"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_an_envelope_python_cannot_read_is_an_api_error(body: bytes) -> None:
    with (
        hostile_server(whole("200 OK", body)) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
        pytest.raises(JobApiError) as caught,
    ):
        client.get_job_instance_status(1)
    assert caught.value.code == -1


def test_malformed_logs_are_an_api_error() -> None:
    status = envelope_of(
        '{"finished": true, "job_instance": {"status": 3}, "step_instance_list": [{'
        '"step_instance_id": 70, "status": 3, "step_ip_result_list": [{"bk_host_id": 1, '
        '"ip": "127.0.0.1", "status": 9}]}]}'
    )
    logs = envelope_of(
        '{"file_task_logs": [{"bk_host_id": 1, "file_logs": [{"size": "9'
        + "9" * 400
        + ' KB", "mode": 1}]}]}'
    )
    by_api = {"get_job_instance_status": status, "batch_get_job_instance_ip_log": logs}
    with (
        hostile_server(answers(by_api)) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
        pytest.raises(JobApiError, match="malformed"),
    ):
        client.get_result(7)


FINISHED = envelope_of(
    '{"finished": true, "job_instance": {"status": 3}, "step_instance_list": [{'
    '"step_instance_id": 70, "status": 3, "step_ip_result_list": []}]}'
)
BUSY = (
    b'{"result": false, "code": 1240001, "message": "The server is handling 64 requests '
    b'already: try again shortly"}'
)
THROTTLED = b'{"result": false, "code": 1249429, "message": "Too many requests: try again in 1 s"}'


def in_turn(by_api: dict[str, list[tuple[str, bytes]]]) -> Answer:
    """Each bk-job API's answers in turn, the last one repeated."""

    def answer(conn: socket.socket, request: str, body: bytes) -> None:
        name = request.split()[1].split("?")[0].rsplit("/", 1)[-1]
        turns = by_api[name]
        status, text = turns.pop(0) if len(turns) > 1 else turns[0]
        conn.sendall(head(status, Content_Length=str(len(text))) + text)

    return answer


@pytest.mark.parametrize(
    "refusal", [("503 Service Unavailable", BUSY), ("429 Too Many", THROTTLED)]
)
def test_a_wait_rides_out_a_server_that_says_try_again(refusal: tuple[str, bytes]) -> None:
    # the job runs: a busy or throttling server is no reason to stop watching it
    by_api = {
        "fast_execute_script": [("200 OK", SUBMITTED)],
        "get_job_instance_status": [refusal, refusal, ("200 OK", FINISHED)],
        "batch_get_job_instance_ip_log": [("200 OK", envelope_of("{}"))],
    }
    with (
        hostile_server(in_turn(by_api)) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
    ):
        result = client.execute_and_wait("echo", hosts=["127.0.0.1"], poll_interval=0)
    assert result.job_instance_id == 7
    assert sum("fast_execute_script" in r for r in server.requests) == 1


def test_events_ride_out_a_server_that_says_try_again() -> None:
    stream = b'event: end\nid: 1\ndata: {"status": 3}\n\n'

    def answer(conn: socket.socket, request: str, body: bytes) -> None:
        if len(server.requests) == 1:
            conn.sendall(head("503 Busy", Content_Length=str(len(BUSY))) + BUSY)
            return
        conn.sendall(head("200 OK", "text/event-stream", Content_Length=str(len(stream))) + stream)

    with (
        hostile_server(answer) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
    ):
        events = list(client.events(7, retry_delay=0))
    assert [e["event"] for e in events] == ["end"]


def endless_event(line_end: bytes) -> Answer:
    """An event stream whose first event never ends: one endless line (no line end),
    or endless data lines (no blank line); bounded, should a client have no limit."""

    def answer(conn: socket.socket, request: str, body: bytes) -> None:
        conn.sendall(head("200 OK", "text/event-stream", Transfer_Encoding="chunked"))
        chunk = b"data: " + b"1" * 65530 + line_end
        for _ in range(256):
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.sendall(b"0\r\n\r\n")

    return answer


@pytest.mark.parametrize("line_end", [b"", b"\n"])
def test_an_endless_event_is_cut_off(line_end: bytes) -> None:
    with (
        hostile_server(endless_event(line_end)) as server,
        JobClient(server.url, "a", "s", "u", max_answer_bytes=1024 * 1024) as client,
        pytest.raises(JobApiError, match="an event is larger than 1048576 bytes"),
    ):
        list(client.events(7, retry_delay=0))


@pytest.mark.parametrize("line_end", [b"", b"\n"])
async def test_async_an_endless_event_is_cut_off(line_end: bytes) -> None:
    with hostile_server(endless_event(line_end)) as server:
        client = AsyncJobClient(server.url, "a", "s", "u", max_answer_bytes=1024 * 1024)
        async with client:
            with pytest.raises(JobApiError, match="an event is larger than"):
                async for _event in client.events(7, retry_delay=0):
                    pass


@pytest.mark.parametrize("timeout", [None, httpx.Timeout(5.0, read=1.0)])
def test_a_timeout_as_httpx_takes_it_is_honoured(timeout: httpx.Timeout | None) -> None:
    # None: no deadline at all, as in httpx; a Timeout: its read timeout for the answer
    with (
        hostile_server(dripping) as server,
        JobClient(server.url, "a", "s", "u", biz=2, timeout=timeout) as client,
    ):
        if timeout is None:
            assert client.get_job_instance_status(1) == {"finished": True}
        else:
            with pytest.raises(JobApiError, match="timed out reading the answer"):
                client.get_job_instance_status(1)


RUNNING = envelope_of(
    '{"finished": false, "job_instance": {"status": 2}, "step_instance_list": []}'
)


async def test_a_wait_cancelled_midway_leaves_no_task_and_no_connection() -> None:
    by_api = {"fast_execute_script": SUBMITTED, "get_job_instance_status": RUNNING}
    with hostile_server(answers(by_api)) as server:
        client = AsyncJobClient(server.url, "a", "s", "u", biz=2)
        waiting = asyncio.create_task(
            client.execute_and_wait("echo", hosts=["127.0.0.1"], poll_interval=0.01)
        )
        while len(server.requests) < 5:
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await client.aclose()
        for _ in range(100):
            if server.open_connections == 0:
                break
            await asyncio.sleep(0.05)
        assert server.open_connections == 0


@pytest.mark.parametrize("answer", ["hang up", "no answer"])
def test_a_run_whose_submission_gets_no_answer_is_sent_once(answer: str) -> None:
    # the server may have started the job: sending it again could start a second one
    def submit(conn: socket.socket, request: str, body: bytes) -> None:
        if answer == "hang up":
            conn.close()
        else:
            time.sleep(1.5)

    with (
        hostile_server(submit) as server,
        JobClient(server.url, "a", "s", "u", timeout=httpx.Timeout(0.5, connect=30)) as client,
        pytest.raises(JobApiError, match="may have acted on it"),
    ):
        client.execute_and_wait("echo", hosts=["127.0.0.1"])
    assert server.requests == ["POST /api/bk-job/prod/api/v3/fast_execute_script HTTP/1.1"]
