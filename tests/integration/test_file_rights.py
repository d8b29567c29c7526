"""File steps resolve every path as the step's account would, on real agents.

The attack: ``nobody`` plants symlinks in a world-writable directory pointing into a
root-only one, then asks for them as a ``nobody`` source.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.harness import Running
from tests.integration.test_file_transfer import run_transfer, transfer_body

SRC, DST = "127.0.0.2", "127.0.0.4"

# one backend: how an agent resolves a path for an account happens on the host; the
# server's side of a file step's failed hosts is tested on every backend elsewhere
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="acting for accounts needs root"),
              pytest.mark.one_backend]


@pytest.fixture
def planted() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="jobfleet-planted-"))
    top.chmod(0o755)
    priv = top / "priv"
    priv.mkdir(mode=0o700)
    (priv / "secret").write_text("root's secret")
    (priv / "secret").chmod(0o644)
    pub = top / "pub"
    pub.mkdir()
    pub.chmod(0o1777)
    (pub / "ok.txt").write_text("public")
    (pub / "ok.txt").chmod(0o644)
    for command in (f"ln -s {priv}/secret {pub}/link", f"ln -s {priv} {pub}/dirlink"):
        subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", command], check=True)
    (top / "out").mkdir(mode=0o777)
    (top / "out").chmod(0o777)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def nobody_source(body: dict[str, object]) -> dict[str, object]:
    sources = body["file_source_list"]
    assert isinstance(sources, list)
    sources[0]["account"] = {"alias": "nobody"}
    return body


def copied(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top / "out")) for p in (top / "out").rglob("*"))


@pytest.mark.parametrize("pattern", ["pub/link", "pub/dirlink/secret", "pub/*link"])
async def test_a_planted_symlink_is_not_copied_out(
    running: Running, planted: Path, pattern: str
) -> None:
    await running.start_agents([SRC, DST])
    await running.server.identity.create_account(2, "nobody")
    body = nobody_source(transfer_body([f"{planted}/{pattern}"], [SRC], [DST], f"{planted}/out/"))
    _sub, data = await run_transfer(running, body)
    assert data["job_instance"]["status"] == 4
    assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 203
    assert copied(planted) == []


async def test_a_directory_or_glob_copy_holding_the_planted_links_is_203(
    running: Running, planted: Path
) -> None:
    await running.start_agents([SRC, DST])
    await running.server.identity.create_account(2, "nobody")
    for pattern, target in (
        (f"{planted}/pub", "a/"),
        (f"{planted}/pub/*", "b/"),
        (f"{planted}/pub/REGEX:.*link", "c/"),
    ):
        body = nobody_source(transfer_body([pattern], [SRC], [DST], f"{planted}/out/{target}"))
        _sub, data = await run_transfer(running, body)
        assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 203, pattern
    assert copied(planted) == []


async def test_fetch_refuses_a_planted_symlink(running: Running, planted: Path) -> None:
    await running.start_agents([SRC])
    await running.server.identity.create_account(2, "nobody")
    answer = await running.wire.post(
        "/api/jobfleet/v1/fetch",
        {
            "bk_biz_id": 2,
            "account_alias": "nobody",
            "file_list": [f"{planted}/pub/link"],
            "target_server": {"ip_list": [{"ip": SRC, "bk_cloud_id": 0}]},
        },
    )
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    data = await running.wire.wait(job_id)
    assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 203
    listing = await running.wire.get(f"/api/jobfleet/v1/fetch/{job_id}", {"bk_biz_id": 2})
    for item in listing["data"]:
        if item["file_id"]:
            resp = await running.wire.http.get(
                f"/api/jobfleet/v1/files/{item['file_id']}", headers=running.wire.headers()
            )
            assert b"secret" not in resp.content


async def test_a_target_leading_where_the_account_cannot_write_is_202(
    running: Running, planted: Path
) -> None:
    await running.start_agents([SRC, DST])
    await running.server.identity.create_account(2, "nobody")
    (planted / "priv").chmod(0o755)
    for target in (f"{planted}/pub/dirlink/", f"{planted}/pub/../priv/"):
        body = transfer_body([f"{planted}/pub/ok.txt"], [SRC], [DST], target)
        body["account_alias"] = "nobody"
        _sub, data = await run_transfer(running, body)
        assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 202, target
    assert sorted(os.listdir(planted / "priv")) == ["secret"]
