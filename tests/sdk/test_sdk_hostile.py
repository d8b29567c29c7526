"""The clients against a real loopback server that answers badly on purpose."""

from __future__ import annotations

import socket
import time

import pytest
from tests.sdk.hostile import head, hostile_server

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
    padded = b" " * 60 + ENVELOPE
    conn.sendall(head("200 OK", Content_Length=str(len(padded))))
    for byte in padded:
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


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


def test_an_answer_that_drips_in_ends_at_the_timeout() -> None:
    with (
        hostile_server(dripping) as server,
        JobClient(server.url, "a", "s", "u", biz=2, timeout=1) as client,
        pytest.raises(JobApiError, match="timed out reading the answer"),
    ):
        client.get_job_instance_status(1)


async def test_async_an_answer_that_drips_in_ends_at_the_timeout() -> None:
    with hostile_server(dripping) as server:
        async with AsyncJobClient(server.url, "a", "s", "u", biz=2, timeout=1) as client:
            with pytest.raises(JobApiError, match="timed out reading the answer"):
                await client.get_job_instance_status(1)
