"""ScriptStore on a real database: the version state machine, resolve_version's rules, races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jobfleet.domain.errors import JobError
from jobfleet.domain.status import ScriptVersionStatus
from jobfleet.store.database import Database
from jobfleet.store.script_lookups import ResolvedScript
from jobfleet.store.scripts import ScriptStore


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ScriptStore]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield ScriptStore(db)
    finally:
        await db.close()


async def make(store: ScriptStore, biz: int | None, name: str, content: str = "echo 1",
               language: int = 1) -> dict[str, object]:
    return await store.create_script(biz, name=name, language=language, description="",
                                     content=content, version="1", version_desc="", user="u")


def code_of(exc: pytest.ExceptionInfo[JobError]) -> int:
    return exc.value.code


async def test_resolve_rules(store: ScriptStore) -> None:
    v1 = await make(store, 2, "s", "echo one")
    sid = str(v1["script_id"])
    vid = int(str(v1["id"]))
    # a draft-only script has nothing to run by script_id, but its draft runs by version id
    with pytest.raises(JobError) as err:
        await store.resolve_version(bk_biz_ids={2}, script_id=sid, script_version_id=None)
    assert code_of(err) == 1244018
    by_version = await store.resolve_version(bk_biz_ids={2}, script_id=None,
                                             script_version_id=vid)
    assert by_version == ResolvedScript(script_id=sid, version_id=vid, version="1", name="s",
                                        language=1, content="echo one", public=False)
    await store.publish_version(2, sid, vid, user="u")
    v2 = await store.create_version(2, sid, content="echo two", version="2", version_desc="",
                                    user="u")
    v2_id = int(str(v2["id"]))
    online = await store.resolve_version(bk_biz_ids={2, 5}, script_id=sid, script_version_id=None)
    assert online.version_id == vid
    # script_version_id wins over script_id, even one that names nothing
    chosen = await store.resolve_version(bk_biz_ids={2}, script_id="missing",
                                         script_version_id=v2_id)
    assert chosen.content == "echo two"
    for kwargs, code in [
        ({"bk_biz_ids": {3}, "script_id": sid, "script_version_id": None}, 1243001),
        # a version of a script out of sight is one that does not exist
        ({"bk_biz_ids": {3}, "script_id": None, "script_version_id": v2_id}, 1243047),
        ({"bk_biz_ids": {2}, "script_id": sid, "script_version_id": None, "public": True},
         1243001),
        ({"bk_biz_ids": {2}, "script_id": "nope", "script_version_id": None}, 1243001),
        ({"bk_biz_ids": {2}, "script_id": "bad id\x00", "script_version_id": None}, 1243001),
        ({"bk_biz_ids": {2}, "script_id": None, "script_version_id": 10**9}, 1243047),
        ({"bk_biz_ids": {2}, "script_id": None, "script_version_id": None}, 1241004),
    ]:
        with pytest.raises(JobError) as err:
            await store.resolve_version(**kwargs)  # type: ignore[arg-type]
        assert code_of(err) == code, kwargs
    await store.disable_version(2, sid, vid, user="u")
    with pytest.raises(JobError) as err:
        await store.resolve_version(bk_biz_ids={2}, script_id=None, script_version_id=vid)
    assert code_of(err) == 1244014
    with pytest.raises(JobError) as err:
        await store.resolve_version(bk_biz_ids={2}, script_id=sid, script_version_id=None)
    assert code_of(err) == 1244018

    # public scripts are visible from any business unless the kind says otherwise
    pub = await make(store, None, "p", "echo pub", language=4)
    await store.publish_version(None, str(pub["script_id"]), int(str(pub["id"])), user="u")
    found = await store.resolve_version(bk_biz_ids=set(), script_id=str(pub["script_id"]),
                                        script_version_id=None)
    assert (found.public, found.language, found.content) == (True, 4, "echo pub")
    with pytest.raises(JobError) as err:
        await store.resolve_version(bk_biz_ids={2}, script_id=str(pub["script_id"]),
                                    script_version_id=None, public=False)
    assert code_of(err) == 1243001

    await store.delete_script(2, sid)
    with pytest.raises(JobError) as err:
        await store.resolve_version(bk_biz_ids={2}, script_id=sid, script_version_id=None)
    assert code_of(err) == 1243001


async def test_concurrent_publishes_leave_one_online(store: ScriptStore) -> None:
    v1 = await make(store, 2, "race")
    sid = str(v1["script_id"])
    ids = [int(str(v1["id"]))]
    for n in range(2, 7):
        made = await store.create_version(2, sid, content=f"echo {n}", version=str(n),
                                          version_desc="", user="u")
        ids.append(int(str(made["id"])))
    await asyncio.gather(*(store.publish_version(2, sid, i, user="u") for i in ids))
    _total, versions = await store.list_versions(2, sid, limit=100)
    statuses = sorted(int(str(v["status"])) for v in versions)
    assert statuses == [ScriptVersionStatus.ONLINE] + [ScriptVersionStatus.OFFLINE] * 5


async def test_concurrent_creates_keep_names_unique(store: ScriptStore) -> None:
    results = await asyncio.gather(*(make(store, 2, "same") for _ in range(6)),
                                   return_exceptions=True)
    made = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, JobError)]
    assert len(made) == 1 and len(refused) == 5, results
    assert all(r.code == 1241010 for r in refused)
    total, _items = await store.list_scripts(2)
    assert total == 1
