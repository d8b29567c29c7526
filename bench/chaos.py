"""Kill -9 the server and agents under a mix of jobs, and check that no result is lost.

A real ``jobfleet server`` process (SQLite in a data dir, or PostgreSQL with
``--pg-url``) and a few ``jobfleet agent`` processes on loopback addresses. Each round
submits, through the bk-job HTTP API:

- ``lines``: a shell script printing numbered lines over a few seconds;
- ``big``: a shell script printing 1 MB of numbered lines;
- ``file``: a fast_transfer_file of a few MB from one agent to the others;
- ``plan``: a plan of two script steps; the first sets a changeable variable, the
  second prints it and numbered lines;
- ``later``: a script job submitted with ``start_task=false`` and then started.

Every script touches a marker file as its last act. At a random moment (or on a
trigger: ``--kill-at``) the server, an agent, or both are killed with SIGKILL and
restarted on the same data dir / database and ports. Once things settle the
invariants are checked:

- every acknowledged job (result true, a job_instance_id) reaches a final state within
  ``--settle`` seconds, and ``get_job_instance_status`` / ``get_job_instance_ip_log``
  answer without an error code;
- every host of a finished step has a final status; a host whose marker exists is a
  success; every host's output holds its numbered lines at most once, in order, and
  all of them when it succeeded;
- the step's status agrees with its hosts', the job's with its steps';
- the server answers /healthz after each restart within ``--start-bound`` seconds.

    python bench/chaos.py [--rounds 30] [--agents 3] [--pg-url postgresql+asyncpg://…]
                          [--kill-at random|submit|stream|transfer|plan2] [--seed N]

Only loopback addresses are used. Everything started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import BIZ, PY, Child, Children, ServerProc, free_port, wait_alive

V3 = "/api/bk-job/prod/api/v3"
V1 = "/api/jobfleet/v1"
FINAL_HOST_WAITING = {5, 7}  # host statuses that are not final
SUCCESS_HOST = 9
FINISHED_RUN = {3, 4, 5, 6, 8, 9, 11, 13, 14}
LINES = 40  # numbered lines of the "lines" job, over ~LINES * 0.08 s
BIG_LINES = 125_000  # "%07g\n": 8 bytes a line, 1 MB
PLAN_LINES = 30
# what a host's log says when its agent (or a source's) was away
AGENT_GONE = re.compile(r"[^\"]{0,80}(not connected|did not come back|agent restarted|"
                        r"stopped answering)[^\"]{0,40}")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Job:
    kind: str
    token: str
    job_id: int = 0
    submit_error: str = ""
    steps: list[int] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    digest: str = ""  # the file job's source digest


@dataclass
class RoundResult:
    number: int
    kill: str
    delay: float
    jobs: int
    acked: int
    violations: list[str]
    restart_s: float
    settle_s: float


class Chaos:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.port = free_port()
        self.agent_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = work / "server"
        self.markers = work / "markers"
        self.markers.mkdir()
        self.files = work / "files"
        self.files.mkdir()
        self.ips = [f"127.0.0.{i + 2}" for i in range(args.agents)]
        self.children = Children(work)
        self.server: Child | None = None
        self.agents: dict[str, Child] = {}
        self.boot: dict[str, Any] = {}
        self.http = httpx.AsyncClient(base_url=self.url, timeout=30, trust_env=False)
        self.plan_id = 0
        self.server_starts: list[float] = []
        self.stream_watch: asyncio.Task[None] | None = None
        self.streamed = asyncio.Event()  # this round's "lines" job is half way
        self.killed_agents: set[str] = set()  # this round's
        self.notes: list[str] = []  # explained outcomes worth a look, not violations

    # --- processes -----------------------------------------------------------------

    def server_argv(self) -> list[str]:
        argv = [PY, "-m", "jobfleet", "server", "--data-dir", str(self.data),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--agent-port", str(self.agent_port), "--log-level", "warning",
                "--agent-lost-grace", str(self.args.lost_grace),
                "--recovery-window", str(self.args.recovery_window), "--enroll-rate", "0"]
        if self.args.pg_url:
            argv += ["--database-url", self.args.pg_url]
        return argv

    async def spawn_server(self) -> Child:
        self.server = await self.children.spawn("server", self.server_argv())
        return self.server

    async def start_server(self) -> float:
        """Seconds until /healthz answered; raises past the bound."""
        started = time.monotonic()
        server = await self.spawn_server()
        deadline = started + self.args.start_bound
        while True:
            if not server.alive:
                raise RuntimeError(f"server exited with {server.proc.returncode}"
                                   f"; see {self.work / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.http.get("/healthz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer within {self.args.start_bound} s")
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
        self.server_starts.append(seconds)
        if not self.boot:
            self.boot = json.loads((self.data / "bootstrap.json").read_text())
            self.http.headers["X-Bkapi-Authorization"] = json.dumps({
                "bk_app_code": self.boot["bk_app_code"],
                "bk_app_secret": self.boot["bk_app_secret"],
                "bk_username": self.boot["admin_user"]})
        return seconds

    async def start_agent(self, ip: str) -> None:
        argv = [PY, "-m", "jobfleet", "agent", "--server", self.url,
                "--state-dir", str(self.work / "agents" / ip), "--ip", ip,
                "--log-level", "warning"]
        self.agents[ip] = await self.children.spawn(
            f"agent-{ip}", argv, env={"JOBFLEET_ENROLL_TOKEN": self.boot["enroll_token"]})

    async def wait_alive(self, timeout: float = 60) -> None:
        assert self.server is not None
        await wait_alive(ServerProc(self.server, self.url, self.boot), self.ips,
                         list(self.agents.values()), timeout)

    async def kill9(self, child: Child) -> None:
        """SIGKILL and reap, so that the next start finds its ports and files free."""
        if child.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        await self.children.stop(child)

    # --- calls ---------------------------------------------------------------------

    async def v3(self, name: str, body: dict[str, Any], *, get: bool = False) -> dict[str, Any]:
        if get:
            resp = await self.http.get(f"{V3}/{name}", params=body)
        else:
            resp = await self.http.post(f"{V3}/{name}", json=body)
        return dict(resp.json())

    def target(self, ips: list[str]) -> dict[str, Any]:
        return {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in ips]}

    async def fast_script(self, script: str, ips: list[str], **extra: Any) -> dict[str, Any]:
        return await self.v3("fast_execute_script", {
            "bk_biz_id": BIZ, "script_content": b64(script), "script_language": 1,
            "account_alias": "root", "target_server": self.target(ips), **extra})

    async def ip_log(self, job_id: int, step_id: int, ip: str) -> dict[str, Any]:
        return await self.v3("get_job_instance_ip_log", {
            "bk_biz_id": BIZ, "job_instance_id": job_id, "step_instance_id": step_id,
            "ip": ip, "bk_cloud_id": 0}, get=True)

    def marker_line(self, token: str, name: str) -> str:
        # the script's last act: what the checks take as "it completed on the host"
        return f'touch "{self.markers}/{token}-{name}-$JOBFLEET_HOST_IP"\n'

    async def setup_plan(self) -> None:
        step1 = ('echo "plan step one ${tag}"\n'
                 'given="${tag}"\n'
                 'tag="${tag}-stepped"\n'
                 'touch "' + str(self.markers) + '/${given}-one-$JOBFLEET_HOST_IP"\n')
        step2 = ('touch "' + str(self.markers) + '/${tag}-two-started-$JOBFLEET_HOST_IP"\n'
                 'echo "tag=${tag}"\n'
                 f'for i in $(seq 1 {PLAN_LINES}); do echo "p $i"; sleep 0.07; done\n'
                 'touch "' + str(self.markers) + '/${tag}-two-$JOBFLEET_HOST_IP"\n')
        server = self.target(self.ips[:2])
        body = {"name": f"chaos-{os.getpid()}", "step_list": [
            {"name": "one", "type": 1, "script_info": {
                "script_content": step1, "script_language": 1, "account": {"alias": "root"},
                "server": server}},
            {"name": "two", "type": 1, "script_info": {
                "script_content": step2, "script_language": 1, "account": {"alias": "root"},
                "server": server}}],
            "global_var_list": [{"name": "tag", "type": 1, "value": "unset",
                                 "changeable": 1}]}
        resp = await self.http.post(f"{V1}/templates", json=body, params={"bk_biz_id": BIZ})
        tpl = resp.json()
        assert tpl["result"], tpl
        resp = await self.http.post(f"{V1}/templates/{tpl['data']['id']}/plans",
                                    json={"name": "chaos"}, params={"bk_biz_id": BIZ})
        plan = resp.json()
        assert plan["result"], plan
        self.plan_id = int(plan["data"]["id"])

    async def submit(self, job: Job) -> None:
        ips = self.ips
        try:
            if job.kind == "lines":
                script = (f'for i in $(seq 1 {LINES}); do echo "{job.token} $i"; sleep 0.08; '
                          "done\n" + self.marker_line(job.token, "lines"))
                job.hosts = ips
                answer = await self.fast_script(script, ips)
            elif job.kind == "big":
                script = (f'seq -f "%07g" 1 {BIG_LINES}\n'
                          + self.marker_line(job.token, "big"))
                job.hosts = ips[:2]
                answer = await self.fast_script(script, job.hosts)
            elif job.kind == "file":
                source = self.files / f"{job.token}.bin"
                payload = self.rng.randbytes(self.args.file_mb * 1024 * 1024)
                source.write_bytes(payload)
                job.digest = hashlib.sha256(payload).hexdigest()
                job.hosts = ips[1:]
                answer = await self.v3("fast_transfer_file", {
                    "bk_biz_id": BIZ, "account_alias": "root",
                    "file_target_path": f"{self.files}/{job.token}/[FILESRCIP]/",
                    "file_source_list": [{"file_list": [str(source)],
                                          "account": {"alias": "root"},
                                          "server": self.target(ips[:1])}],
                    "target_server": self.target(job.hosts)})
            elif job.kind == "plan":
                job.hosts = ips[:2]
                answer = await self.v3("execute_job_plan", {
                    "bk_biz_id": BIZ, "job_plan_id": self.plan_id,
                    "global_var_list": [{"name": "tag", "value": job.token}]})
            elif job.kind == "later":
                script = (f'for i in $(seq 1 10); do echo "{job.token} $i"; sleep 0.05; '
                          "done\n" + self.marker_line(job.token, "later"))
                job.hosts = ips[-1:]
                answer = await self.fast_script(script, job.hosts, start_task=False)
                if answer.get("result"):
                    job.job_id = int(answer["data"]["job_instance_id"])
                    await asyncio.sleep(0.3)
                    try:
                        start = await self.v3("operate_job_instance", {
                            "bk_biz_id": BIZ, "job_instance_id": job.job_id,
                            "operation_code": 2})
                    except httpx.HTTPError as exc:
                        start = {"code": type(exc).__name__}
                    if not start.get("result"):
                        # not started, so still waiting for a start: settle presses again
                        job.submit_error = f"start: {start.get('code')}"
                    return
                job.submit_error = f"code {answer.get('code')}: {answer.get('message')}"
                return
            else:
                raise ValueError(job.kind)
        except (httpx.HTTPError, ValueError) as exc:
            job.submit_error = type(exc).__name__
            return
        if answer.get("result") and answer.get("data", {}).get("job_instance_id"):
            job.job_id = int(answer["data"]["job_instance_id"])
        else:
            job.submit_error = f"code {answer.get('code')}: {answer.get('message')}"

    # --- the checks ----------------------------------------------------------------

    async def status(self, job_id: int) -> dict[str, Any]:
        return await self.v3("get_job_instance_status", {
            "bk_biz_id": BIZ, "job_instance_id": job_id, "return_ip_result": "true"}, get=True)

    async def settle(self, jobs: list[Job], deadline: float,
                     violations: list[str]) -> dict[int, dict[str, Any]]:
        done: dict[int, dict[str, Any]] = {}
        pending = [j for j in jobs if j.job_id]
        restarted: set[int] = set()
        while pending and time.monotonic() < deadline:
            for job in list(pending):
                try:
                    answer = await self.status(job.job_id)
                except httpx.HTTPError:
                    continue
                if not answer.get("result"):
                    violations.append(f"{job.kind} {job.job_id}: status answered "
                                      f"code {answer.get('code')} {answer.get('message')}")
                    pending.remove(job)
                    continue
                data = answer["data"]
                if data["finished"]:
                    done[job.job_id] = data
                    pending.remove(job)
                elif (job.kind == "later" and job.submit_error.startswith("start")
                      and job.job_id not in restarted
                      and data["job_instance"]["status"] == 1):
                    # the start call itself was cut by the kill: the operator presses again
                    restarted.add(job.job_id)
                    await self.v3("operate_job_instance", {
                        "bk_biz_id": BIZ, "job_instance_id": job.job_id,
                        "operation_code": 2})
            await asyncio.sleep(0.3)
        for job in pending:
            try:
                data = (await self.status(job.job_id)).get("data") or {}
                state = data.get("job_instance", {}).get("status")
                hosts = [(s.get("status"), [h["status"] for h in s.get("step_ip_result_list", [])])
                         for s in data.get("step_instance_list", [])]
            except httpx.HTTPError as exc:
                state, hosts = type(exc).__name__, []
            violations.append(f"{job.kind} {job.job_id}: not finished after settle "
                              f"(job {state}, steps/hosts {hosts}; submit: "
                              f"{job.submit_error or 'ok'})")
        return done

    async def check(self, job: Job, data: dict[str, Any], violations: list[str]) -> None:
        where = f"{job.kind} {job.job_id}"
        job_status = data["job_instance"]["status"]
        if job_status not in FINISHED_RUN:
            violations.append(f"{where}: finished with job status {job_status}")
        steps = data["step_instance_list"]
        step_statuses = [s["status"] for s in steps]
        # a job that ran every step to success is a success, and the other way round
        if job_status == 3 and any(s != 3 for s in step_statuses):
            violations.append(f"{where}: job 3 but steps {step_statuses}")
        if step_statuses and all(s == 3 for s in step_statuses) and job_status != 3:
            violations.append(f"{where}: steps all 3 but job {job_status}")
        for index, step in enumerate(steps):
            results = step.get("step_ip_result_list", [])
            host_status = {r["ip"]: r["status"] for r in results}
            if step["status"] in (1, 5) and job_status != 3:
                continue  # a step the job never reached
            waiting = {ip: s for ip, s in host_status.items() if s in FINAL_HOST_WAITING}
            if waiting:
                violations.append(f"{where} step {index + 1}: step {step['status']}, hosts "
                                  f"not final {waiting}")
            if step["status"] == 3 and any(s != SUCCESS_HOST for s in host_status.values()):
                violations.append(f"{where} step {index + 1}: step 3 but hosts {host_status}")
            if (host_status and all(s == SUCCESS_HOST for s in host_status.values())
                    and step["status"] not in (3,)):
                violations.append(f"{where} step {index + 1}: hosts all 9 but step "
                                  f"{step['status']}")
            if step["status"] == 4 and all(s == SUCCESS_HOST for s in host_status.values()):
                violations.append(f"{where} step {index + 1}: failed with every host 9")
            await self.check_hosts(job, index, step, host_status, violations)

    async def check_hosts(self, job: Job, index: int, step: dict[str, Any],
                          host_status: dict[str, int], violations: list[str]) -> None:
        where = f"{job.kind} {job.job_id} step {index + 1}"
        for ip, status in host_status.items():
            if job.kind == "file":
                answer = await self.ip_log(job.job_id, step["step_instance_id"], ip)
                if not answer.get("result"):
                    violations.append(f"{where} {ip}: ip log answered code "
                                      f"{answer.get('code')} {answer.get('message')}")
                self.agent_blamed(where, ip, status, answer, violations)
                if status == SUCCESS_HOST:
                    copy = self.files / job.token / f"0_{self.ips[0]}" / f"{job.token}.bin"
                    if not copy.exists():
                        violations.append(f"{where} {ip}: 9 but no file at {copy}")
                    elif hashlib.sha256(copy.read_bytes()).hexdigest() != job.digest:
                        violations.append(f"{where} {ip}: 9 but the copy differs")
                continue
            name = {"plan": "one" if index == 0 else "two"}.get(job.kind, job.kind)
            marker_token = job.token if job.kind != "plan" else (
                job.token if index == 0 else f"{job.token}-stepped")
            marker = self.markers / f"{marker_token}-{name}-{ip}"
            answer = await self.ip_log(job.job_id, step["step_instance_id"], ip)
            if not answer.get("result"):
                violations.append(f"{where} {ip}: ip log answered code {answer.get('code')} "
                                  f"{answer.get('message')}")
                continue
            log = (answer.get("data") or {}).get("log_content") or ""
            self.agent_blamed(where, ip, status, answer, violations)
            if marker.exists() and status != SUCCESS_HOST:
                # an agent killed between its script's exit and writing the result
                # down cannot know the exit code; it must say so, not fail silently
                reasons = [line for line in log.splitlines()
                           if line.startswith(("jobfleet:", "jobfleet-agent:"))]
                if reasons and ip in self.killed_agents:
                    self.notes.append(f"{where} {ip}: completed, reported {status}: "
                                      f"{reasons[-1]}")
                else:
                    # its agent lived through the round: only the server died, and the
                    # agent holds every result until the server acknowledges it
                    violations.append(f"{where} {ip}: the script completed but the host "
                                      f"is {status}: {reasons or 'no reason in its log'}")
            problem = self.numbered(job, index, log, complete=status == SUCCESS_HOST)
            if problem:
                violations.append(f"{where} {ip} (status {status}): {problem}")

    def agent_blamed(self, where: str, ip: str, status: int, answer: dict[str, Any],
                     violations: list[str]) -> None:
        """A host failed for an agent that was away in a round where no agent was killed:
        only the server died, and every agent comes back within the recovery window."""
        if status == SUCCESS_HOST or self.killed_agents:
            return
        text = json.dumps(answer.get("data") or {})
        found = AGENT_GONE.search(text)
        if found:
            violations.append(f"{where} {ip}: {status} for an agent no kill touched: "
                               f"...{found.group(0)}")

    def numbered(self, job: Job, index: int, log: str, *, complete: bool) -> str:
        """What is wrong with a host's output: numbered lines missing, repeated or out
        of order. A host that did not succeed may stop early, never repeat."""
        if job.kind == "plan" and index == 0:
            pattern = re.compile(r"^plan step one (\S+)$")
            lines = [m.group(1) for m in map(pattern.match, log.splitlines()) if m]
            if complete and lines != [job.token]:
                return f"step one printed {lines[:3]} for {job.token}"
            return ""
        if job.kind == "big":
            pattern, total = re.compile(r"^(\d{7})$"), BIG_LINES
        elif job.kind == "plan":
            pattern, total = re.compile(r"^p (\d+)$"), PLAN_LINES
            if complete and f"tag={job.token}-stepped" not in log.splitlines():
                return "step two did not print the variable step one set"
        else:
            pattern = re.compile(rf"^{re.escape(job.token)} (\d+)$")
            total = LINES if job.kind == "lines" else 10
        numbers = [int(m.group(1)) for m in map(pattern.match, log.splitlines()) if m]
        expected = list(range(1, len(numbers) + 1))
        if numbers != expected:
            # same length, so they differ somewhere
            first_bad = next(i for i, (a, b) in enumerate(zip(numbers, expected, strict=True))
                             if a != b)
            return (f"{len(numbers)} numbered lines, not 1..n in order "
                    f"(at index {first_bad}: {numbers[max(first_bad - 2, 0):first_bad + 3]})")
        if complete and len(numbers) != total:
            return f"succeeded with {len(numbers)} of {total} numbered lines"
        return ""

    # --- a round -------------------------------------------------------------------

    async def kill_trigger(self, jobs: list[Job], kill_at: str) -> float:
        """Wait for the moment to kill; the seconds waited."""
        started = time.monotonic()
        if kill_at == "random":
            await asyncio.sleep(self.rng.uniform(0.0, self.args.max_delay))
        elif kill_at == "submit":
            await asyncio.sleep(self.rng.uniform(0.0, 0.15))
        elif kill_at == "ack":
            # right after the first answer: the job is written, its run barely begun
            limit = started + 15
            while time.monotonic() < limit and not any(j.job_id for j in jobs):
                await asyncio.sleep(0.002)
            await asyncio.sleep(self.rng.uniform(0.0, 0.05))
        elif kill_at == "transfer":
            await asyncio.sleep(self.rng.uniform(0.2, 0.8))
        else:
            await self.stream_or_plan2(jobs, kill_at, started + 15)
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        return time.monotonic() - started

    async def stream_or_plan2(self, jobs: list[Job], kill_at: str, limit: float) -> None:
        """Until the "lines" job is half way (stream) or the plan's second step has
        started (plan2), or ``limit``."""
        if kill_at == "stream":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.streamed.wait(), limit - time.monotonic())
            return
        plan = next(j for j in jobs if j.kind == "plan")
        glob = f"{plan.token}-stepped-two-started-*"
        while time.monotonic() < limit:
            if list(self.markers.glob(glob)):
                return
            await asyncio.sleep(0.02)

    async def end_watch(self) -> None:
        if self.stream_watch is not None:
            self.stream_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.stream_watch
            self.stream_watch = None

    async def round(self, number: int) -> RoundResult:
        tokens = [f"r{number}x{i}" for i in range(5)]
        kinds = ["lines", "big", "file", "plan", "later"]
        jobs = [Job(kind, token) for kind, token in zip(kinds, tokens, strict=True)]
        self.streamed = asyncio.Event()
        kill = self.rng.choice(self.args.kills)
        kill_at = self.args.kill_at if self.args.kill_at != "mixed" else self.rng.choice(
            ["random", "submit", "ack", "stream", "transfer", "plan2"])
        violations: list[str] = []

        async def submit_all() -> None:
            if self.args.parallel:
                # every submit in flight at once: a kill lands in the middle of several
                await asyncio.gather(*(self.submit(job) for job in jobs))
                return
            for job in jobs:
                await self.submit(job)
                await asyncio.sleep(self.rng.uniform(0.0, 0.1))
        submitting = asyncio.create_task(submit_all())
        if kill_at == "stream":
            self.stream_watch = asyncio.create_task(self.watch_stream(jobs[0]))
        delay = await self.kill_trigger(jobs, kill_at)
        restart = 0.0
        victims: list[str] = []
        if kill in ("server", "both"):
            assert self.server is not None
            await self.kill9(self.server)
            victims.append("server")
        self.killed_agents = set()
        if kill in ("agent", "both"):
            ip = self.rng.choice(self.ips)
            await self.kill9(self.agents[ip])
            self.killed_agents.add(ip)
            victims.append(ip)
        if kill == "double":
            assert self.server is not None
            await self.kill9(self.server)
            victims.append("server")
        await submitting
        await asyncio.sleep(self.rng.uniform(0.0, 1.5))
        early = self.rng.random() < 0.5
        if early:
            # agents back before the server: they retry against a closed port
            for ip, child in self.agents.items():
                if not child.alive:
                    await self.start_agent(ip)
        if kill == "double":
            # a crash loop: the second start dies while it recovers the first's jobs
            second = await self.spawn_server()
            await asyncio.sleep(self.rng.uniform(0.3, 4.0))
            await self.kill9(second)
            victims.append("server")
            await asyncio.sleep(self.rng.uniform(0.0, 1.0))
        if kill in ("server", "both", "double"):
            try:
                restart = await self.start_server()
            except RuntimeError as exc:
                violations.append(f"server restart: {exc}")
                await self.end_watch()
                return RoundResult(number, kill, delay, len(jobs), 0, violations, -1, 0)
        for ip, child in self.agents.items():
            if not child.alive:
                await self.start_agent(ip)
        settle_start = time.monotonic()
        done = await self.settle(jobs, settle_start + self.args.settle, violations)
        settle = time.monotonic() - settle_start
        for job in jobs:
            if job.job_id in done:
                try:
                    await self.check(job, done[job.job_id], violations)
                except (httpx.HTTPError, KeyError, TypeError) as exc:
                    violations.append(f"{job.kind} {job.job_id}: check failed: {exc!r}")
        await self.end_watch()
        await self.wait_alive()
        acked = sum(1 for j in jobs if j.job_id)
        label = f"{'+'.join(victims) or 'none'}@{kill_at}"
        return RoundResult(number, label, delay, len(jobs), acked, violations, restart, settle)

    async def watch_stream(self, job: Job) -> None:
        """Set ``streamed`` once the "lines" job has printed half of its lines on a host."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if job.job_id:
                with contextlib.suppress(httpx.HTTPError, KeyError, TypeError):
                    data = (await self.status(job.job_id))["data"]
                    step = data["step_instance_list"][0]["step_instance_id"]
                    answer = await self.ip_log(job.job_id, step, self.ips[0])
                    log = (answer.get("data") or {}).get("log_content") or ""
                    if log.count("\n") >= LINES // 2:
                        self.streamed.set()
                        return
            await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    chaos = Chaos(args, work)
    results: list[RoundResult] = []
    notes = 0
    print(f"work dir {work}; server on {chaos.url}", flush=True)
    try:
        first = await chaos.start_server()
        print(f"server up in {first:.2f} s", flush=True)
        for ip in chaos.ips:
            await chaos.start_agent(ip)
        await chaos.wait_alive()
        await chaos.setup_plan()
        for number in range(1, args.rounds + 1):
            result = await chaos.round(number)
            results.append(result)
            print(f"round {number:3d} kill {result.kill:28s} at {result.delay:5.2f} s  "
                  f"acked {result.acked}/{result.jobs}  restart {result.restart_s:5.2f} s  "
                  f"settle {result.settle_s:5.1f} s  violations {len(result.violations)}",
                  flush=True)
            for violation in result.violations:
                print(f"    {violation}", flush=True)
            for note in chaos.notes:
                print(f"    note: {note}", flush=True)
            notes += len(chaos.notes)
            chaos.notes.clear()
            if result.restart_s < 0:
                break
    finally:
        await chaos.children.stop_all()
        await chaos.http.aclose()
    kills = sum(1 for r in results if not r.kill.startswith("none"))
    violations = sum(len(r.violations) for r in results)
    print()
    print("| round | kill@when | delay s | acked | restart s | settle s | violations |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r.number} | {r.kill} | {r.delay:.2f} | {r.acked}/{r.jobs} | "
              f"{r.restart_s:.2f} | {r.settle_s:.1f} | {len(r.violations)} |")
    starts = chaos.server_starts
    print(f"\nrounds {len(results)}, kills {kills}, violations {violations}, explained "
          f"notes {notes}; server starts {len(starts)}, slowest {max(starts):.2f} s")
    if violations == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    return 1 if violations else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--pg-url", default="")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kill-at", default="mixed",
                        choices=["mixed", "random", "submit", "ack", "stream", "transfer",
                                 "plan2"])
    parser.add_argument("--parallel", action="store_true",
                        help="submit a round's jobs all at once, not one after another")
    parser.add_argument("--kills", type=lambda s: s.split(","),
                        default=["server", "server", "agent", "both"],
                        help="comma-separated: server, agent, both, double (the server killed "
                             "again while it starts), none; drawn at random")
    parser.add_argument("--max-delay", type=float, default=5.0)
    parser.add_argument("--settle", type=float, default=90.0)
    parser.add_argument("--start-bound", type=float, default=60.0)
    parser.add_argument("--lost-grace", type=float, default=3.0)
    parser.add_argument("--recovery-window", type=float, default=15.0)
    parser.add_argument("--file-mb", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
