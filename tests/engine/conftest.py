"""The engine's parts on a real database, with agents that answer in-process.

``FakeAgents`` stands in for the gateway's registry: each connected host answers a
``run`` as an agent would (output, then ``done``) through the same ``AgentEvents``
the gateway calls, so the writer, tracking and state rules are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from jobfleet.assembly import FileParts, build_engine
from jobfleet.bus.local import LocalBus
from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.engine.dispatch import AgentEvents
from jobfleet.engine.jobs import Jobs
from jobfleet.engine.settings import EngineSettings
from jobfleet.store.blobs import BlobStore
from jobfleet.store.database import Database, now_ms
from jobfleet.store.filelogs import FileLogStore
from jobfleet.store.inventory import Inventory
from jobfleet.store.jobs import HOST_ROW_DEFAULTS, JobStore, NewJob, NewStep
from jobfleet.store.secrets import Cipher

FAST = EngineSettings(
    node_id="n1",
    agent_lost_grace=0.3,
    recovery_window=0.5,
    timeout_slack=0.2,
    reconcile_interval=0.2,
    terminate_wait=0.5,
    lease_renew=0.2,
)

# what a fake agent does with a script: the exit code, or None to never answer
Behaviour = Callable[[dict[str, Any]], int | None]


def exit_code_of(message: dict[str, Any]) -> int | None:
    """``exit N`` ends with N; ``sleep`` never ends (until killed); anything else 0."""
    script = str(message.get("script", ""))
    if script.startswith("sleep"):
        return None
    if script.startswith("exit "):
        return int(script.split()[1])
    return 0


@dataclass(eq=False)
class FakeLink:
    bk_host_id: int
    events: AgentEvents
    behaviour: Behaviour = exit_code_of
    agent_id: str = "agent"
    peer: str = "127.0.0.1"
    known: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        kind = message["t"]
        if kind == protocol.RUN:
            self.known.add(message["id"])
            code = self.behaviour(message)
            if code is not None:
                asyncio.get_running_loop().call_soon(self._finish, message["id"], code)
        elif kind == protocol.KILL and message["id"] in self.known:
            status = HostStatus.GSE_TASK_TERMINATE_SUCCESS
            if message["reason"] == "timeout":
                status = HostStatus.TASK_TIMEOUT
            asyncio.get_running_loop().call_soon(self._done, message["id"], status, None)

    def _finish(self, task: str, code: int) -> None:
        self.events.agent_message(
            self, {"t": protocol.OUTPUT, "id": task, "seq": 1, "data": f"host {self.bk_host_id}\n"}
        )
        status = HostStatus.SUCCESS if code == 0 else HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE
        self._done(task, status, code)

    def _done(self, task: str, status: int, code: int | None) -> None:
        now = now_ms()
        self.events.agent_message(
            self,
            {"t": protocol.DONE, "id": task, "seq": 2, "status": int(status), "exit": code,
             "start": now, "end": now, "data": ""},
        )

    def acked(self) -> list[list[Any]]:
        return [a for m in self.sent if m["t"] == protocol.ACK for a in m["acks"]]


class FakeAgents:
    """The agent directory: which hosts have a live connection."""

    def __init__(self) -> None:
        self.links: dict[int, FakeLink] = {}
        self.events: AgentEvents | None = None

    def for_host(self, bk_host_id: int) -> FakeLink | None:
        return self.links.get(bk_host_id)

    def connect(self, host: int, behaviour: Behaviour = exit_code_of) -> FakeLink:
        assert self.events is not None
        link = FakeLink(host, self.events, behaviour)
        self.links[host] = link
        self.events.agent_online(link)
        return link

    def drop(self, host: int) -> None:
        link = self.links.pop(host)
        assert self.events is not None
        self.events.agent_offline(link)


@dataclass
class Rig:
    db: Database
    store: JobStore
    engine: Jobs
    agents: FakeAgents
    events: AgentEvents
    finished: list[tuple[int, RunStatus]]

    async def wait_finished(self, job_id: int, timeout: float = 10.0) -> RunStatus:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for done, status in self.finished:
                if done == job_id:
                    return status
            await asyncio.sleep(0.02)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s")


class Refusals:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def refuse(self, conn: Any, reason: str, detail: str, *, audit: bool = True) -> None:
        self.reasons.append(reason)


@pytest.fixture
async def rig(database_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    db = Database(database_url)
    await db.migrate()
    store = JobStore(db)
    agents = FakeAgents()
    finished: list[tuple[int, RunStatus]] = []
    files = FileParts(BlobStore(db, tmp_path / "blobs"), FileLogStore(db), Inventory(db), 1 << 20)
    bus = LocalBus("n1")
    engine, events, listener = build_engine(
        store, agents, bus, Cipher(Fernet.generate_key()), FAST, Refusals(),  # type: ignore[arg-type]
        files, on_job_finished=[lambda job, status: finished.append((job, status))],
    )
    agents.events = events  # type: ignore[assignment]
    await bus.start(listener)
    await engine.start()
    try:
        yield Rig(db, store, engine, agents, events, finished)
    finally:
        await engine.stop()
        await bus.stop()
        await db.close()


def script_job(hosts: list[int], script: str = "echo hi", *, timeout: int = 60,
               rolling: dict[str, Any] | None = None, steps: int = 1,
               no_agent: tuple[int, ...] = ()) -> NewJob:
    """A job of script steps on ``hosts``, as ``submit`` builds one."""
    now = now_ms()
    batch_of = {}
    values: dict[str, Any] = {}
    if rolling:
        size = rolling["size"]
        batch_of = {h: i // size + 1 for i, h in enumerate(hosts)}
        values = {"rolling_config": rolling["config"],
                  "batch_count": max(batch_of.values()), "current_batch": 0}
    rows = [{**HOST_ROW_DEFAULTS, "execute_count": 0, "bk_host_id": h,
             "batch": batch_of.get(h, 0), "bk_cloud_id": 0, "ip": f"127.0.0.{h}",
             "agent_id": "" if h in no_agent else f"agent-{h}", "status": int(HostStatus.WAITING)}
            for h in hosts]
    step_values = {"status": int(RunStatus.BLANK), "execute_count": 0, "ignore_error": False,
                   "timeout": timeout, "account_id": 1, "account_alias": "root",
                   "account_name": "root", "operator": "alice", "create_time": now,
                   "script_language": 1, "script_content": script, **values}
    return NewJob(
        values={"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": "unit",
                "type": 1, "launch_mode": 1, "operator": "alice", "app_code": "app",
                "plan_id": -1, "template_id": -1, "callback_url": None},
        steps=[NewStep(f"step {i}", 1, dict(step_values), [dict(r) for r in rows])
               for i in range(steps)],
    )
