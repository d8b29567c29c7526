"""A download sent with no length is capped: a server cannot fill the disk."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tests.sdk.hostile import head, hostile_server

from jobfleet.sdk import AsyncJobClient, JobApiError, JobClient

CAP = 1024 * 1024


def endless_file(conn: socket.socket, request: str, body: bytes) -> None:
    # a file, chunked: endless as far as a client with a 1 MiB cap can tell
    conn.sendall(head("200 OK", "application/octet-stream", Transfer_Encoding="chunked",
                      Content_Disposition='attachment; filename="big.bin"'))
    chunk = b"x" * 65536
    try:
        for _ in range(64):
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.sendall(b"0\r\n\r\n")
    except OSError:
        pass


def long_file(conn: socket.socket, request: str, body: bytes) -> None:
    # a length beyond the cap is refused before a byte is read
    conn.sendall(head("200 OK", "application/octet-stream", Content_Length=str(CAP + 1),
                      Content_Disposition='attachment; filename="big.bin"'))


def test_a_chunked_download_is_cut_off_at_max_bytes(tmp_path: Path) -> None:
    dest = tmp_path / "big.bin"
    with (
        hostile_server(endless_file) as server,
        JobClient(server.url, "a", "s", "u") as client,
        pytest.raises(JobApiError, match=f"larger than {CAP} bytes") as caught,
    ):
        client.download_file("f1", dest, max_bytes=CAP)
    assert caught.value.code == -1
    assert list(tmp_path.iterdir()) == []


async def test_async_a_chunked_download_is_cut_off_at_max_bytes(tmp_path: Path) -> None:
    dest = tmp_path / "big.bin"
    with hostile_server(endless_file) as server:
        async with AsyncJobClient(server.url, "a", "s", "u") as client:
            with pytest.raises(JobApiError, match=f"larger than {CAP} bytes"):
                await client.download_file("f1", dest, max_bytes=CAP)
    assert list(tmp_path.iterdir()) == []


def test_a_download_longer_than_max_bytes_is_refused_at_once(tmp_path: Path) -> None:
    with (
        hostile_server(long_file) as server,
        JobClient(server.url, "a", "s", "u") as client,
        pytest.raises(JobApiError, match=f"larger than {CAP} bytes"),
    ):
        client.download_file("f1", tmp_path / "big.bin", max_bytes=CAP)
    assert list(tmp_path.iterdir()) == []

