"""Rolling execution, retries and step operations with real agents."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from tests.integration.harness import Running, b64, eventually, run_server

from jobfleet.agent.processes import agent_key

IPS = [f"127.0.0.{n}" for n in range(91, 97)]


async def run(running: Running, script: str, rolling: dict[str, Any] | None = None,
              ips: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {**extra}
    if rolling is not None:
        body["rolling_config"] = rolling
    return await running.wire.run_script(script, ips or IPS, **body)


async def step_status(running: Running, job: dict[str, Any], **extra: Any) -> dict[str, Any]:
    answer = await running.wire.v3("get_step_instance_status", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"], **extra}, method="GET")
    assert answer["result"], answer
    return dict(answer["data"])


def hosts_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for g in data["step_result_group_list"] for h in g["host_result_list"]]


def batches(data: dict[str, Any]) -> list[list[str]]:
    by_batch: dict[int, list[str]] = {}
    for host in hosts_of(data):
        by_batch.setdefault(host["batch"], []).append(host["ip"])
    return [sorted(by_batch[b]) for b in sorted(by_batch)]


async def operate(running: Running, job: dict[str, Any], code: int) -> dict[str, Any]:
    return await running.wire.v3("operate_step_instance", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"], "operation_code": code})


async def job_status_is(running: Running, job: dict[str, Any], *wanted: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        data = await running.wire.status(job["job_instance_id"])
        return data if data["job_instance"]["status"] in wanted else None
    return dict(await eventually(check, timeout=40, interval=0.1))


async def by_host_id(running: Running) -> list[str]:
    """The test hosts in host id order: the order batches are cut in."""
    hosts = sorted(await running.server.inventory.list(), key=lambda h: h.bk_host_id)
    return [h.ip for h in hosts if h.ip in IPS]


async def test_expressions_make_the_batches_they_say(running: Running) -> None:
    await running.start_agents(IPS)
    cases = {"2": [2, 2, 2], "50%": [3, 3], "1 *2": [1, 2, 3], "1 +1": [1, 2, 3],
             "1 2 100%": [1, 2, 3], "4": [4, 2]}
    for expression, sizes in cases.items():
        job = await run(running, "echo ok", {"expression": expression})
        done = await running.wire.wait(job["job_instance_id"])
        assert done["job_instance"]["status"] == 3, (expression, done)
        data = await step_status(running, job)
        got = batches(data)
        assert [len(b) for b in got] == sizes, (expression, got)
        assert data["batch_count"] == len(sizes)
        # serial: a batch starts only after the one before it has ended
        hosts = hosts_of(data)
        for n in range(2, len(sizes) + 1):
            before = max(h["end_time"] for h in hosts if h["batch"] == n - 1)
            after = min(h["start_time"] for h in hosts if h["batch"] == n)
            assert after >= before, (expression, n)
        only_second = await step_status(running, job, batch=2)
        assert [h["batch"] for h in hosts_of(only_second)] == [2] * sizes[1]


async def test_bad_rolling_configs(running: Running) -> None:
    await running.start_agents(IPS[:1])
    cases = [({"expression": "0"}, 1244026), ({"expression": "abc"}, 1244026),
             ({"expression": "100% 1"}, 1244026), ({"expression": "+1"}, 1244026),
             ({"expression": "*2 1"}, 1244026), ({}, 1241004),
             ({"expression": "1", "mode": 7}, 1241010),
             ({"expression": "1", "execution_mode": 2, "batch_start_wait_random_min_ms": 9,
               "batch_start_wait_random_max_ms": 1}, 1241010),
             ({"expression": "1", "type": 2}, 1241011)]
    for config, code in cases:
        answer = await running.wire.v3("fast_execute_script", {
            "bk_biz_id": 2, "script_content": b64("echo"), "script_language": 1,
            "account_alias": "root", "rolling_config": config or {"mode": 1},
            "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}})
        assert answer["code"] == code, (config, answer)


async def test_pause_on_failure_then_retry_only_the_failed_host(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS)
    order = await by_host_id(running)
    ledger = tmp_path / "ledger"
    fixed = tmp_path / "fixed"
    script = (f'echo "$JOBFLEET_HOST_IP" >> {ledger}\n'
              f'if [ "$JOBFLEET_HOST_IP" = "{order[1]}" ] && [ ! -e {fixed} ]; then exit 5; fi\n')
    job = await run(running, script, {"expression": "2", "mode": 1})
    done = await running.wire.wait(job["job_instance_id"])
    assert done["job_instance"]["status"] == 4
    data = await step_status(running, job)
    by_ip = {h["ip"]: h["status"] for h in hosts_of(data)}
    assert by_ip[order[0]] == 9 and by_ip[order[1]] == 104
    assert all(by_ip[ip] == 5 for ip in order[2:]), by_ip  # later batches never started
    assert sorted(ledger.read_text().split()) == sorted(order[:2])

    fixed.touch()
    answer = await operate(running, job, 2)
    assert answer["result"], answer
    done = await running.wire.wait(job["job_instance_id"])
    assert done["job_instance"]["status"] == 3
    step = done["step_instance_list"][0]
    assert (step["status"], step["execute_count"]) == (3, 1)
    retried = {h["ip"]: h["status"] for h in hosts_of(await step_status(running, job))}
    assert retried[order[0]] == 3 and all(retried[ip] == 9 for ip in order[1:])
    # the host that had succeeded did not run again
    assert sorted(ledger.read_text().split()) == sorted([*order[:2], *order[1:]])
    first = {h["ip"]: h["status"] for h in hosts_of(await step_status(running, job,
                                                                      execute_count=0))}
    assert first == by_ip
    logs = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"], "bk_cloud_id": 0, "ip": order[1],
        "execute_count": 0}, method="GET")
    assert logs["result"], logs


async def test_ignore_mode_runs_every_batch_and_threshold_stops_the_rollout(
        running: Running) -> None:
    await running.start_agents(IPS)
    order = await by_host_id(running)
    fail_two = f'case "$JOBFLEET_HOST_IP" in {order[0]}|{order[3]}) exit 1;; esac\n'
    job = await run(running, fail_two, {"expression": "2", "mode": 2})
    done = await running.wire.wait(job["job_instance_id"])
    assert done["job_instance"]["status"] == 4
    statuses = [h["status"] for h in hosts_of(await step_status(running, job))]
    assert 5 not in statuses and statuses.count(104) == 2

    job = await run(running, fail_two, {"expression": "1", "mode": 2, "max_fail_count": 1})
    done = await running.wire.wait(job["job_instance_id"])
    assert done["job_instance"]["status"] == 4
    by_ip = {h["ip"]: h["status"] for h in hosts_of(await step_status(running, job))}
    # the second failure (fourth batch) crosses the threshold: nothing after it starts
    assert [by_ip[ip] for ip in order] == [104, 9, 9, 104, 5, 5]

    job = await run(running, fail_two, {"expression": "2", "mode": 2,
                                        "max_fail_percentage": 10})
    await running.wire.wait(job["job_instance_id"])
    by_ip = {h["ip"]: h["status"] for h in hosts_of(await step_status(running, job))}
    assert [by_ip[ip] for ip in order] == [104, 9, 5, 5, 5, 5]


async def test_confirm_between_batches(running: Running) -> None:
    await running.start_agents(IPS[:4])
    job = await run(running, "echo ok", {"expression": "2", "mode": 3}, ips=IPS[:4])
    data = await job_status_is(running, job, 7)
    step = data["step_instance_list"][0]
    assert step["status"] == 7
    assert [h["status"] for h in data["step_instance_list"][0]["step_ip_result_list"]] == [
        9, 9, 5, 5]
    early = await running.wire.v3("operate_step_instance", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"], "operation_code": 2})
    assert early["code"] == 1241003
    assert (await operate(running, job, 13))["result"]
    done = await running.wire.wait(job["job_instance_id"])
    assert done["job_instance"]["status"] == 3
    again = await operate(running, job, 13)
    assert again["code"] == 1241003


class LoopStalls:
    """The spans in which this process's event loop, which runs the server, the agents
    and the test, ran nothing: a probe that asks to wake every ``TICK`` notes how late
    it woke. A whole process held up (starved of CPU, or blocked in a system call on
    the loop's thread) delays every timer in it alike, the engine's waits too."""

    TICK = 0.01
    # lateness below this is a loaded machine's ordinary jitter, not a stall
    NOTED = 0.05

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []  # epoch ms, as hosts' start times
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> LoopStalls:
        self._task = asyncio.get_running_loop().create_task(self._probe())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _probe(self) -> None:
        while True:
            asked = time.time() + self.TICK
            await asyncio.sleep(self.TICK)
            woke = time.time()
            if woke - asked > self.NOTED:
                self.spans.append((asked * 1000, woke * 1000))

    def within(self, start_ms: float, end_ms: float) -> float:
        """Milliseconds of stall between two instants."""
        return sum(max(0.0, min(b, end_ms) - max(a, start_ms)) for a, b in self.spans)


async def test_staggered_batches_overlap(running: Running) -> None:
    await running.start_agents(IPS[:4])
    rolling = {"expression": "1", "execution_mode": 2, "batch_start_wait_fixed_ms": 300,
               "batch_start_wait_random_min_ms": 0, "batch_start_wait_random_max_ms": 100}
    with LoopStalls() as stalls:
        # longer than the most a batch may wait below (1.5 s and what the process stood
        # still), so that each one overlaps the next whenever the waits are kept
        job = await run(running, "sleep 3", rolling, ips=IPS[:4])
        done = await running.wire.wait(job["job_instance_id"])
    assert done["job_instance"]["status"] == 3
    hosts = sorted(hosts_of(await step_status(running, job)), key=lambda h: h["batch"])
    # a host's start is when its agent began the task
    starts = [h["start_time"] for h in hosts]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # the waits are kept if batch k began k waits after the first (a loaded machine
    # delays one batch's start and not the next's)
    assert all(starts[k] - starts[0] >= 280 * k for k in range(1, 4)), gaps
    # no batch waits for more than its wait and some slack, save for the time the
    # whole process stood still in between, which no engine can make up for: in a
    # test worker that has run many tests before this one, a full garbage collection
    # alone holds it for up to a second on a loaded 2-core machine, more as the
    # objects earlier tests left behind pile up
    held = [round(stalls.within(a, b)) for a, b in itertools.pairwise(starts)]
    assert all(g <= 1500 + h for g, h in zip(gaps, held, strict=True)), (gaps, held)
    # each batch began before the one before it had finished
    assert all(hosts[i + 1]["start_time"] < hosts[i]["end_time"] for i in range(3)), (
        gaps, held, [h["end_time"] - h["start_time"] for h in hosts])


async def test_retry_all_ignore_error_and_terminate(running: Running) -> None:
    await running.start_agents(IPS[:2])
    job = await run(running, "echo attempt; exit 2", ips=IPS[:2])
    assert (await running.wire.wait(job["job_instance_id"]))["job_instance"]["status"] == 4
    assert (await operate(running, job, 8))["result"]
    done = await running.wire.wait(job["job_instance_id"])
    assert done["step_instance_list"][0]["execute_count"] == 1
    assert done["job_instance"]["status"] == 4
    assert (await operate(running, job, 3))["result"]
    done = await running.wire.wait(job["job_instance_id"])
    assert (done["job_instance"]["status"], done["step_instance_list"][0]["status"]) == (3, 6)
    assert (await operate(running, job, 3))["code"] == 1241003

    tree = ("echo $$; sh -c 'sleep 300 & sleep 300' & "
            "setsid sh -c 'sleep 300' & sleep 300")
    job = await run(running, tree, ips=IPS[:2])
    logs: dict[str, str] = {}

    async def started() -> bool:
        nonlocal logs
        logs = await running.wire.logs(job["job_instance_id"], job["step_instance_id"],
                                       IPS[:2])
        return all(v.strip() for v in logs.values())

    await eventually(started, timeout=20)
    groups = [int(v.split()[0]) for v in logs.values()]
    assert all(_group_alive(g) for g in groups)
    stop = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"], "operation_code": 1})
    assert stop["result"], stop
    done = await running.wire.wait(job["job_instance_id"])
    assert done["step_instance_list"][0]["status"] == 11
    assert {h["status"] for h in done["step_instance_list"][0]["step_ip_result_list"]} == {403}
    await asyncio.sleep(0.5)
    assert not any(_group_alive(g) for g in groups)
    assert not _tasks_alive(running, job["step_instance_id"])
    assert (await operate(running, job, 11))["result"]
    done = await running.wire.wait(job["job_instance_id"])
    assert done["step_instance_list"][0]["status"] == 5


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process in the group: what ``ps`` shows for it."""
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True)
    return any(not line.strip().startswith("Z") for line in out.stdout.splitlines()
               if line.strip())


def _tasks_alive(running: Running, step_id: int) -> bool:
    """Any process left that carries the tag of a task of the step on one of this test's
    agents (setsid'd ones too); other tests' tasks on this machine have other tags."""
    prefixes = [
        f"JOBFLEET_TASK_TAG={agent_key(running.data_dir / f'agent-{ip}' / 'work')}/{step_id}:"
        .encode() for ip in running.agents
    ]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if any(prefix in environ for prefix in prefixes):
            return True
    return False


async def test_step_status_filters_and_detail(running: Running) -> None:
    await running.start_agents(IPS[:3])
    order = [ip for ip in await by_host_id(running) if ip in IPS[:3]]
    script = (f'if [ "$JOBFLEET_HOST_IP" = "{order[0]}" ]; then echo needle-here; exit 3; fi\n'
              "echo plain\n")
    job = await run(running, script, ips=IPS[:3], is_param_sensitive=1,
                    script_param=b64("--secret=abc"))
    await running.wire.wait(job["job_instance_id"])
    grouped = await step_status(running, job)
    assert sorted((g["result_type"], g["host_size"]) for g in
                  grouped["step_result_group_list"]) == [(9, 2), (104, 1)]
    assert [h["ip"] for h in hosts_of(await step_status(running, job, status=104))] == [
        order[0]]
    assert [h["ip"] for h in hosts_of(await step_status(running, job,
                                                        keyword="needle"))] == [order[0]]
    assert [h["ip"] for h in hosts_of(await step_status(running, job,
                                                        search_ip=order[1]))] == [order[1]]
    capped = await step_status(running, job, max_host_num_per_group=1)
    nine = next(g for g in capped["step_result_group_list"] if g["result_type"] == 9)
    assert (nine["host_size"], len(nine["host_result_list"])) == (2, 1)
    detail = await running.wire.v3("get_step_instance_detail", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"]}, method="GET")
    info = detail["data"]["script_info"]
    assert info["script_param"] == "******" and info["account"]["alias"] == "root"
    assert b64(script) == info["script_content"]
    assert {h["ip"] for h in info["server"]["host_list"]} == set(IPS[:3])
    assert all(h["alive"] == 1 for h in info["server"]["host_list"])
    missing = await running.wire.v3("get_step_instance_status", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": 999999}, method="GET")
    assert missing["code"] == 1244007


async def test_file_step_rolls_out_in_batches(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS[:3])
    source = tmp_path / "artifact.txt"
    source.write_text("v2\n")
    dest = tmp_path / "dest"
    answer = await running.wire.v3("fast_transfer_file", {
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{dest}/[FILESRCIP]/",
        "file_source_list": [{"file_list": [str(source)], "account": {"alias": "root"},
                              "server": {"ip_list": [{"bk_cloud_id": 0, "ip": IPS[0]}]}}],
        "target_server": {"ip_list": [{"bk_cloud_id": 0, "ip": ip} for ip in IPS[:3]]},
        "rolling_config": {"expression": "1 +1", "mode": 1}})
    assert answer["result"], answer
    job = answer["data"]
    done = await running.wire.wait(job["job_instance_id"])
    assert done["job_instance"]["status"] == 3
    assert [len(b) for b in batches(await step_status(running, job))] == [1, 2]
    assert (dest / f"0_{IPS[0]}" / "artifact.txt").read_text() == "v2\n"


class _DeafToKills:
    """An agent's executor that never acts on a kill (a host stuck in the kernel, say)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def run(self, spec: Any, on_output: Any, on_started: Any = None) -> Any:
        return await self.inner.run(spec, on_output, on_started)

    def kill(self, task_id: str, reason: str = "terminate") -> bool:
        return False


async def test_force_skip_ends_a_terminate_that_agents_do_not_confirm(
        tmp_path: Path, database_url: str) -> None:
    # the server would wait a long time for the agent to confirm: only the skip can
    # end the step within this test's waits, however slow the machine is
    async with run_server(tmp_path, database_url, engine={"terminate_wait": 300}) as running:
        await running.start_agents(IPS[:1])
        agent = running.agents[IPS[0]][0]
        real = agent.executor
        agent.executor = _DeafToKills(real)  # type: ignore[assignment]
        job = await run(running, "echo started; sleep 600", ips=IPS[:1])

        async def started() -> bool:
            logs = await running.wire.logs(job["job_instance_id"], job["step_instance_id"],
                                           IPS[:1])
            return logs[IPS[0]].strip() == "started"

        await eventually(started, timeout=60)
        early = await operate(running, job, 12)
        assert early["code"] == 1241003  # not terminating yet
        stop = await running.wire.v3("operate_job_instance", {
            "bk_biz_id": 2, "job_instance_id": job["job_instance_id"], "operation_code": 1})
        assert stop["result"], stop
        await eventually(lambda: _step_is(running, job, 10), timeout=60)
        skipped = await operate(running, job, 12)
        assert skipped["result"], skipped
        done = await running.wire.wait(job["job_instance_id"], timeout=60)
        step = done["step_instance_list"][0]
        assert step["status"] == 11
        assert [h["status"] for h in step["step_ip_result_list"]] == [404]
        logs = await running.wire.logs(job["job_instance_id"], job["step_instance_id"],
                                       IPS[:1])
        assert "skipped by an operator" in logs[IPS[0]], logs
        for task_id in list(getattr(real, "_running", {})):
            real.kill(task_id)


async def _step_is(running: Running, job: dict[str, Any], status: int) -> bool:
    data = await running.wire.status(job["job_instance_id"])
    return bool(data["step_instance_list"][0]["status"] == status)


async def test_terminate_during_a_staggered_pause_ends_the_batches_already_started(
        running: Running) -> None:
    await running.start_agents(IPS[:3])
    rolling = {"expression": "1", "execution_mode": 2, "batch_start_wait_fixed_ms": 30_000}
    job = await run(running, "echo started; sleep 60", rolling, ips=IPS[:3])

    async def first_batch_runs() -> bool:
        logs = await running.wire.logs(job["job_instance_id"], job["step_instance_id"], IPS[:3])
        return any(v.strip() == "started" for v in logs.values())

    await eventually(first_batch_runs, timeout=20)
    stop = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"], "operation_code": 1})
    assert stop["result"], stop
    done = await running.wire.wait(job["job_instance_id"], timeout=20)
    step = done["step_instance_list"][0]
    assert (done["job_instance"]["status"], step["status"]) == (11, 11)
    # the running batch was ended like any terminated host, the later ones never began
    statuses = sorted(h["status"] for h in step["step_ip_result_list"])
    assert statuses == [5, 5, 403], statuses

    async def killed() -> bool:
        return not _tasks_alive(running, job["step_instance_id"])

    await eventually(killed, timeout=10)


async def test_two_terminates_at_once_one_is_told_the_job_is_terminating(
        running: Running) -> None:
    await running.start_agents(IPS[:1])
    job = await run(running, "echo started; sleep 60", ips=IPS[:1])
    await eventually(lambda: _step_is(running, job, 2), timeout=10)
    term = {"bk_biz_id": 2, "job_instance_id": job["job_instance_id"], "operation_code": 1}
    answers = await asyncio.gather(*[running.wire.v3("operate_job_instance", term)
                                     for _ in range(3)])
    codes = sorted(a["code"] for a in answers)
    # one is accepted; the others are told the job is terminating, or, on a machine slow
    # enough that the first had already ended the job before they were read, that it has
    # finished: never a second success
    assert codes[0] == 0 and set(codes[1:]) <= {1244015, 1241003}, answers
    done = await running.wire.wait(job["job_instance_id"], timeout=20)
    assert done["job_instance"]["status"] == 11


async def test_a_staggered_rollout_in_mode_1_starts_no_batch_after_a_failure(
        running: Running) -> None:
    await running.start_agents(IPS[:3])
    order = [ip for ip in await by_host_id(running) if ip in IPS[:3]]
    script = f'if [ "$JOBFLEET_HOST_IP" = "{order[0]}" ]; then exit 5; fi\necho ran\n'
    rolling = {"expression": "1", "mode": 1, "execution_mode": 2,
               "batch_start_wait_fixed_ms": 1500}
    job = await run(running, script, rolling, ips=IPS[:3])
    done = await running.wire.wait(job["job_instance_id"], timeout=30)
    assert done["job_instance"]["status"] == 4
    by_ip = {h["ip"]: h["status"] for h in hosts_of(await step_status(running, job))}
    assert by_ip == {order[0]: 104, order[1]: 5, order[2]: 5}, by_ip


async def test_a_staggered_rollout_in_mode_3_parks_before_each_next_batch(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS[:2])
    rolling = {"expression": "1", "mode": 3, "execution_mode": 2,
               "batch_start_wait_fixed_ms": 200}
    # the first batch runs until the test lets it end, so that it is seen running while
    # the step parks however slow the machine (a fixed sleep could end first)
    release = tmp_path / "release"
    script = f"while [ ! -e {release} ]; do sleep 0.05; done; echo ran"
    job = await run(running, script, rolling, ips=IPS[:2])
    await eventually(lambda: _step_is(running, job, 7), timeout=20)
    data = await step_status(running, job)
    assert sorted(h["status"] for h in hosts_of(data)) == [5, 7], data
    assert (await running.wire.status(job["job_instance_id"]))["job_instance"]["status"] == 7
    await asyncio.sleep(0.5)
    assert sorted(h["status"] for h in hosts_of(await step_status(running, job)))[0] == 5
    release.touch()
    assert (await operate(running, job, 13))["result"]
    done = await running.wire.wait(job["job_instance_id"], timeout=30)
    assert done["job_instance"]["status"] == 3
    assert [h["status"] for h in done["step_instance_list"][0]["step_ip_result_list"]] == [9, 9]


async def _refuse_running(running: Running, ip: str) -> None:
    """The database refuses to mark this host running (a real error, raised by a trigger)."""
    (host,) = [h.bk_host_id for h in await running.server.inventory.list() if h.ip == ip]
    db = running.server.db
    async with db.begin() as conn:
        if db.engine.dialect.name == "sqlite":
            await conn.execute(text(
                "CREATE TRIGGER refuse_running BEFORE UPDATE OF status ON step_hosts "
                f"WHEN NEW.status = 7 AND NEW.bk_host_id = {host} "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"))
        else:
            await conn.execute(text(
                "CREATE FUNCTION refuse_running() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"))
            await conn.execute(text(
                "CREATE TRIGGER refuse_running BEFORE UPDATE OF status ON step_hosts "
                f"FOR EACH ROW WHEN (NEW.status = 7 AND NEW.bk_host_id = {host}) "
                "EXECUTE FUNCTION refuse_running()"))


async def test_a_step_that_fails_on_the_server_kills_what_its_hosts_run(
        running: Running) -> None:
    """The first batch of a staggered rollout runs a long script; starting the second
    fails inside the server: the step ends abnormal, and the first batch's script does
    not go on running on its host."""
    await running.start_agents(IPS[:2])
    order = [ip for ip in await by_host_id(running) if ip in IPS[:2]]
    await _refuse_running(running, order[1])
    # the wait before the second batch leaves the first one's script time to start
    rolling = {"expression": "1", "execution_mode": 2, "batch_start_wait_fixed_ms": 2000}
    job = await run(running, "echo started; sleep 300", rolling, ips=IPS[:2])
    done = await running.wire.wait(job["job_instance_id"], timeout=30)
    step = done["step_instance_list"][0]
    assert (done["job_instance"]["status"], step["status"]) == (9, 9), done
    assert {h["status"] for h in hosts_of(await step_status(running, job))} == {0}
    logs = await running.wire.logs(job["job_instance_id"], job["step_instance_id"], order[:1])
    assert logs[order[0]].startswith("started\n"), logs
    assert "failed on the server" in logs[order[0]], logs

    async def killed() -> bool:
        return not _tasks_alive(running, job["step_instance_id"])

    await eventually(killed, timeout=10)
