"""Two writers of one file at once: the checksum stored is always that of the bytes stored."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import httpx
from tests.integration.harness import Running
from tests.integration.test_file_http import agent_headers

MIB = 1024 * 1024


async def upload_url(running: Running, name: str = "race.bin") -> tuple[str, str]:
    answer = await running.wire.v3(
        "generate_local_file_upload_url",
        {"bk_scope_type": "biz", "bk_scope_id": "2", "file_name_list": [name]},
    )
    assert answer["result"], answer
    target = answer["data"]["url_map"][name]
    return target["upload_url"], target["path"].split("/")[0]


async def stored(running: Running, file_id: str) -> tuple[bytes, str]:
    """The bytes the server hands out, and the checksum it hands out with them."""
    resp = await running.wire.http.get(
        f"/api/jobfleet/v1/files/{file_id}", headers=running.wire.headers()
    )
    assert resp.status_code == 200, resp.text
    return resp.content, resp.headers["x-jobfleet-sha256"]


async def slow_body(
    data: bytes, started: asyncio.Event, release: asyncio.Event
) -> AsyncIterator[bytes]:
    yield data[:MIB]
    started.set()
    await release.wait()
    for at in range(MIB, len(data), MIB):
        yield data[at : at + MIB]


async def test_a_later_upload_to_the_same_url_wins_and_the_earlier_gets_an_error(
    running: Running,
) -> None:
    url, file_id = await upload_url(running)
    first, second = os.urandom(4 * MIB), os.urandom(3 * MIB + 5)
    started, release = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(trust_env=False, timeout=60) as other:
        slow = asyncio.create_task(other.put(url, content=slow_body(first, started, release)))
        await started.wait()
        await asyncio.sleep(0.2)  # the first upload's bytes are arriving
        fast = await running.wire.http.put(url, content=second)
        release.set()
        loser = await slow
    assert fast.status_code == 200 and fast.json()["result"], fast.text
    assert fast.json()["data"]["sha256"] == hashlib.sha256(second).hexdigest()
    assert loser.status_code == 409, loser.text
    body = loser.json()
    assert body["result"] is False and "replaces it" in body["message"]
    data, checksum = await stored(running, file_id)
    assert data == second and checksum == hashlib.sha256(data).hexdigest()
    assert not list(running.server.services.blobs.root.glob("*.part"))


async def test_uploads_racing_freely_keep_bytes_and_checksum_together(running: Running) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=60) as other:
        for round_ in range(6):
            url, file_id = await upload_url(running, f"free-{round_}.bin")
            bodies = [os.urandom(MIB + round_ * 1000), os.urandom(2 * MIB - round_)]
            answers = await asyncio.gather(
                running.wire.http.put(url, content=bodies[0]), other.put(url, content=bodies[1])
            )
            won = [a for a in answers if a.status_code == 200]
            assert len(won) == 1, [a.text for a in answers]
            assert [a.status_code for a in answers if a not in won] == [409]
            assert all(a.json()["result"] is False for a in answers if a not in won)
            data, checksum = await stored(running, file_id)
            assert data in bodies and checksum == hashlib.sha256(data).hexdigest()
            assert won[0].json()["data"]["sha256"] == checksum


async def test_an_agents_writes_racing_keep_bytes_and_checksum_together(
    running: Running,
) -> None:
    await running.start_agents(["127.0.0.2"])
    hosts = {h.ip: h.bk_host_id for h in await running.server.inventory.list()}
    blobs = running.server.services.blobs
    blob_id = await blobs.create(
        name="app.log", kind="agent", writer_host_id=hosts["127.0.0.2"], bk_biz_id=2
    )
    url = f"/api/jobfleet/v1/agents/blobs/{blob_id}"
    headers = agent_headers(running, "127.0.0.2")
    first, second = os.urandom(4 * MIB), os.urandom(2 * MIB)
    started, release = asyncio.Event(), asyncio.Event()
    # agents write over their own encrypted port: two clients of it race
    async with running.agent_http() as other, running.agent_http() as mine:
        slow = asyncio.create_task(
            other.put(url, content=slow_body(first, started, release), headers=headers)
        )
        await started.wait()
        await asyncio.sleep(0.2)
        fast = await mine.put(url, content=second, headers=headers)
        release.set()
        loser = await slow
    assert fast.json()["result"], fast.text
    assert loser.status_code == 409 and loser.json()["result"] is False
    blob = await blobs.get(blob_id)
    assert blob is not None and blob.state == "complete"
    data = blobs.path(blob_id).read_bytes()
    assert data == second and blob.sha256 == hashlib.sha256(data).hexdigest()
