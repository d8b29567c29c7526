"""Bulk statements (tuples through the driver) and the job writes that use them."""

from __future__ import annotations

from sqlalchemy import bindparam, select, update

from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.store.bulk import BulkStatement
from jobfleet.store.database import Database, now_ms
from jobfleet.store.jobs import HostResult, JobStore, NewJob, NewStep
from jobfleet.store.tables import step_hosts

WAITING = int(HostStatus.WAITING)
OPEN = {"status": WAITING, "execute_count": 0}


def _job(hosts: list[dict[str, object]]) -> NewJob:
    now = now_ms()
    return NewJob(
        values={"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": "j", "type": 1,
                "launch_mode": 1, "operator": "alice", "app_code": "app",
                "status": int(RunStatus.RUNNING), "create_time": now},
        steps=[NewStep("s", 1, {"status": int(RunStatus.RUNNING), "create_time": now}, hosts)],
    )


async def test_host_rows_take_the_table_defaults_and_keep_what_they_name(db: Database) -> None:
    jobs = JobStore(db)
    _, (step,) = await jobs.create(_job([
        {"bk_host_id": 1, "bk_cloud_id": 0, "ip": "127.0.0.1", **OPEN},
        {"bk_host_id": 2, "bk_cloud_id": 3, "ip": "127.0.0.2", "ipv6": "::ffff:127.0.6.2", **OPEN,
         "agent_id": "a2", "batch": 2, "tag": "t"},
    ]))
    rows = {r.bk_host_id: r for r in await jobs.hosts(step, 0)}
    assert (rows[1].batch, rows[1].ipv6, rows[1].agent_id, rows[1].error_code, rows[1].tag,
            rows[1].exit_code) == (0, "", None, 0, "", None)
    assert (rows[2].bk_cloud_id, rows[2].ipv6, rows[2].agent_id, rows[2].batch,
            rows[2].tag) == (3, "::ffff:127.0.6.2", "a2", 2, "t")


async def test_host_rows_with_other_columns_are_written_too(db: Database) -> None:
    jobs = JobStore(db)
    _, (step,) = await jobs.create(_job([
        {"bk_host_id": 1, "bk_cloud_id": 0, "ip": "127.0.0.1", "status": 9, "start_time": 5,
         "execute_count": 0},
    ]))
    (row,) = await jobs.hosts(step, 0)
    assert (row.status, row.start_time) == (9, 5)


async def test_final_results_land_once_on_open_hosts_only(db: Database) -> None:
    jobs = JobStore(db)
    _, (step,) = await jobs.create(_job([
        {"bk_host_id": h, "bk_cloud_id": 0, "ip": f"127.0.0.{h}", **OPEN}
        for h in (1, 2, 3)
    ]))
    await jobs.mark_running(step, 0, [2])
    chunk = {"step_instance_id": step, "execute_count": 0, "seq": 1, "content": "hello\n"}
    finals = [HostResult(step, 0, h, int(HostStatus.SUCCESS), exit_code=0, start_time=100,
                         end_time=150) for h in (1, 2)]
    await jobs.ingest([{**chunk, "bk_host_id": 1}, {**chunk, "bk_host_id": 2}], finals)
    # a repeat changes nothing: the chunk exists and the host has finished
    again = [HostResult(step, 0, 1, int(HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE), exit_code=1)]
    await jobs.ingest([{**chunk, "bk_host_id": 1, "content": "other\n"}], again)
    rows = {r.bk_host_id: r for r in await jobs.hosts(step, 0)}
    assert [(rows[h].status, rows[h].exit_code, rows[h].total_time) for h in (1, 2)] == [
        (int(HostStatus.SUCCESS), 0, 50), (int(HostStatus.SUCCESS), 0, 50)]
    assert rows[3].status == WAITING
    assert await jobs.logs(step, 0, [1, 2, 3]) == {1: "hello\n", 2: "hello\n", 3: ""}


async def test_a_statement_whose_parameters_come_in_another_order(db: Database) -> None:
    jobs = JobStore(db)
    _, (step,) = await jobs.create(_job([
        {"bk_host_id": h, "bk_cloud_id": 0, "ip": f"127.0.0.{h}", **OPEN}
        for h in (1, 2)
    ]))
    # the SET comes before the WHERE in the SQL, the fields name the key first; and the
    # statement's own literal (the status) is a parameter of every row
    statement = BulkStatement(
        update(step_hosts)
        .where(step_hosts.c.step_instance_id == bindparam("s"),
               step_hosts.c.bk_host_id == bindparam("h"),
               step_hosts.c.status == WAITING)
        .values(tag=bindparam("t")),
        ("s", "h", "t"),
    )
    async with db.begin() as conn:
        await statement.run(conn, [(step, 1, "one"), (step, 2, "two")])
        await statement.run(conn, [])
    async with db.connect() as conn:
        tags = dict((await conn.execute(
            select(step_hosts.c.bk_host_id, step_hosts.c.tag)
            .where(step_hosts.c.step_instance_id == step))).all())
    assert tags == {1: "one", 2: "two"}
