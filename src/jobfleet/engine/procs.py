"""GSE process management and messages to agents, over the agent channel.

``operate`` records a task with one ``handling`` row per host and process, then
asks each agent in the background (a few hosts at a time) and writes each answer
as it comes; callers poll the task (``get_proc_operate_result_v2``). ``status``
and ``dispatch`` ask the agents while the caller waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from jobfleet.domain import protocol
from jobfleet.domain.errors import JobError
from jobfleet.domain.status import AccountCategory
from jobfleet.engine.ports import AgentRequests
from jobfleet.engine.rpc import AgentUnavailable
from jobfleet.store.accounts import AccountStore
from jobfleet.store.outage import OutageLog
from jobfleet.store.procs import ProcAnswer, ProcStore, ProcTarget

log = logging.getLogger(__name__)

HANDLING = 115
AGENT_ABNORMAL = 117
OP_FAILED = 65535
# the operations that look for the pid file after their commands
STARTS = (protocol.PROC_START, protocol.PROC_RESTART)
# what a host is answered when its server stopped before its agent did: the task that
# waited for the agent went with the server, and nothing would answer it after
SERVER_STOPPED = "the server stopped before the agent answered: ask again"
# an agent id naming no host; one of a business the caller may not use is answered
# alike, so that the answer tells nothing of other businesses
AGENT_NOT_FOUND = "the agent is not found (unknown, or of a business you may not use)"


@dataclass(frozen=True)
class ProcOperation:
    """One entry of ``proc_operate_req``: an operation on a process on some hosts."""

    op: int
    spec: protocol.ProcSpec
    # (bk_host_id, the agent id the caller named it by)
    hosts: list[tuple[int, str]]
    # the hosts refused on their own: answered with a code and message, never asked
    refused: list[Refused] = field(default_factory=list)


@dataclass(frozen=True)
class Refused:
    """A host of an operation answered without asking its agent (no host: the agent id
    names none the caller may use)."""

    bk_host_id: int | None
    agent_id: str
    code: int
    message: str

    @classmethod
    def not_found(cls, agent_id: str) -> Refused:
        return cls(None, agent_id, AGENT_ABNORMAL, AGENT_NOT_FOUND)


def account_of(op: int, spec: protocol.ProcSpec, where: str) -> str | None:
    """The execution account an operation runs as (None: it runs nothing). A process runs
    as one of its hosts' businesses' execution accounts, as a script does. Asking for the
    status runs nothing and names no account; an operation that may run a command must
    name one (``spec.identity.user``)."""
    name = spec["account"]
    if op == protocol.PROC_STATUS or (not name and op == protocol.PROC_UNDELEGATE):
        return None
    if not name:
        raise JobError.missing(f"{where}.spec.identity.user")
    return name


async def account_holders(
    accounts: AccountStore, wanted: Mapping[str, set[int]]
) -> dict[str, set[int]]:
    """For each account name, which of its businesses hold it as a system account: one
    query a name, however many operations and hosts name it."""
    return {
        name: await accounts.holders(name, biz_ids, AccountCategory.SYSTEM)
        for name, biz_ids in wanted.items()
    }


def unheld(
    op: int,
    spec: protocol.ProcSpec,
    biz_ids: set[int],
    where: str,
    holders: Mapping[str, set[int]],
) -> dict[int, str]:
    """The businesses among ``biz_ids`` whose hosts the operation may not touch, each with
    why: ``spec.identity.user`` must be the OS account of a system account of the host's
    business (``holders``: what ``account_holders`` found)."""
    name = account_of(op, spec, where)
    if name is None:
        return {}
    held = holders.get(name, set())
    return {
        biz: f"Account [{name}] is not an execution account of business [{biz}]: "
        "a process runs only as one of its business's accounts (create_account)"
        for biz in sorted(biz_ids)
        if biz not in held
    }


def state_content(state: dict[str, Any], spec: protocol.ProcSpec, agent_id: str) -> str:
    """A process state as GSE's operation result ``content`` (a JSON string)."""
    instance = {
        "pid": state.get("pid", -1),
        "isAuto": bool(state.get("delegated")),
        "restarts": state.get("restarts", 0),
        "startTime": state.get("start_time", 0),
        "status": state.get("status", 0),
    }
    process = [{"procName": spec["name"], "instance": [instance]}]
    value = {"bk_agent_id": agent_id, "process": process}
    # bk-nodeman's process checks read ``process[0].instance[0]`` at the top
    return orjson.dumps({"value": [value], "process": process}).decode()


class ProcManager:
    def __init__(
        self,
        agents: AgentRequests,
        store: ProcStore,
        *,
        node_id: str = "",
        timeout: float = 90.0,
        status_timeout: float = 10.0,
        parallel: int = 64,
    ) -> None:
        self.agents = agents
        self.store = store
        self.node_id = node_id
        self.timeout = timeout
        self.status_timeout = status_timeout
        self._parallel = asyncio.Semaphore(parallel)
        # status queries and messages have slots of their own: an operation may wait for
        # its agent a minute and more, and a query waits for no operation
        self._asking = asyncio.Semaphore(parallel)
        self._running: dict[asyncio.Task[None], str] = {}
        # answers not written yet, and one write of them at a time: the hosts of a large
        # operation answer together, and one connection a host would take the whole pool
        # for as long as they last, from the API's requests too
        self._answers: list[ProcAnswer] = []
        self._writing = asyncio.Lock()
        # the answers go on coming while the database is away: a line per write would
        # bury the log under the same traceback
        self._write_outage = OutageLog(log, "proc_result_write_failed")

    async def operate(
        self, operations: list[ProcOperation], *, biz_ids: list[int], operator: str, app_code: str
    ) -> str:
        task_id = "GSETASK:" + uuid.uuid4().hex
        work = [
            (host, ProcTarget(host, agent_id, o.spec["namespace"], o.spec["name"], o.op), o.spec)
            for o in operations
            for host, agent_id in o.hosts
        ]
        refused = [
            (
                ProcTarget(r.bk_host_id, r.agent_id, o.spec["namespace"], o.spec["name"], o.op),
                r.code,
                r.message,
            )
            for o in operations
            for r in o.refused
        ]
        await self.store.create(
            task_id,
            [t for _host, t, _spec in work],
            biz_ids=biz_ids,
            operator=operator,
            app_code=app_code,
            node_id=self.node_id,
            handling=HANDLING,
            answered=refused,
        )
        for host, target, spec in work:
            task = asyncio.get_running_loop().create_task(self._one(task_id, host, target, spec))
            self._running[task] = task_id
            task.add_done_callback(self._forget)
        return task_id

    async def _one(
        self, task_id: str, host: int, target: ProcTarget, spec: protocol.ProcSpec
    ) -> None:
        # a start (or restart) looks for the pid file start_check_secs after its commands:
        # the agent is waited for that much longer, not answered "not reachable" meanwhile
        timeout = self.timeout
        if target.op in STARTS:
            timeout += spec["start_check_secs"]
        async with self._parallel:
            code, message, state = await self.ask(host, target.op, spec, timeout)
        content = state_content(state, spec, target.agent_id) if state else ""
        self._answers.append(ProcAnswer(task_id, target, code, message, content))
        await self._write_answers()

    async def _write_answers(self) -> None:
        """Write the answers waiting, in one transaction; those that come meanwhile wait
        for it, and the next writer takes them all at once."""
        async with self._writing:
            answers, self._answers = self._answers, []
            if not answers:
                return
            try:
                await self.store.finish(answers)
                self._write_outage.ok()
            except Exception:
                self._write_outage.failed(
                    "tasks=%s answers=%d",
                    ",".join(sorted({a.task_id for a in answers})),
                    len(answers),
                )

    async def ask(
        self, host: int, op: int, spec: protocol.ProcSpec, timeout: float
    ) -> tuple[int, str, dict[str, Any] | None]:
        """(GSE error code, message, the process state) of one operation on one host."""
        try:
            reply = await self.agents.call(host, dict(protocol.proc_request(op, spec)), timeout)
        except (AgentUnavailable, TimeoutError) as exc:
            return AGENT_ABNORMAL, f"the agent is not reachable: {exc}", None
        state = reply.get("proc")
        if not isinstance(state, dict):
            return OP_FAILED, str(reply.get("error") or "the agent did not answer"), None
        return int(state["code"]), str(state["message"]), state

    async def status(
        self, hosts: list[tuple[int, str]], spec: protocol.ProcSpec
    ) -> list[tuple[int, str, dict[str, Any] | None]]:
        """Each host's state of the process (None: the agent did not answer)."""
        # one timeout for the whole query, however many turns of the slots its hosts
        # take: agents that never answer are waited for together, not a turn after another
        deadline = asyncio.get_running_loop().time() + self.status_timeout

        async def one(host: int, agent_id: str) -> tuple[int, str, dict[str, Any] | None]:
            state: dict[str, Any] | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline), self._asking:
                    _code, _message, state = await self.ask(
                        host, protocol.PROC_STATUS, spec, self.status_timeout
                    )
            return host, agent_id, state

        return list(await asyncio.gather(*(one(h, a) for h, a in hosts)))

    async def dispatch(
        self, hosts: list[int], message_id: str, slot_id: int, content: str
    ) -> dict[int, str | None]:
        """Deliver a message to each host's agent; per host the error, or None."""
        request = dict(protocol.dispatch_request(message_id, slot_id, content))
        # one timeout for the whole message, as for a status query
        deadline = asyncio.get_running_loop().time() + self.status_timeout

        async def one(host: int) -> tuple[int, str | None]:
            try:
                async with asyncio.timeout_at(deadline), self._asking:
                    reply = await self.agents.call(host, request, self.status_timeout)
            except TimeoutError:
                return host, f"the agent is not reachable: no answer in {self.status_timeout:g}s"
            except AgentUnavailable as exc:
                return host, f"the agent is not reachable: {exc}"
            return host, None if reply.get("delivered") else str(reply.get("error") or "failed")

        return dict(await asyncio.gather(*(one(h) for h in hosts)))

    async def start(self) -> None:
        """What this node asked before it died (its tasks went with it) is answered now."""
        await self.store.abandon_node(
            self.node_id, handling=HANDLING, code=OP_FAILED, message=SERVER_STOPPED
        )

    async def node_gone(self, node_id: str) -> None:
        """What a node that died asked (its tasks went with it) is answered by a live
        one once the cluster holds it gone: it may never come back to answer it."""
        await self.store.abandon_node(
            node_id, handling=HANDLING, code=OP_FAILED, message=SERVER_STOPPED
        )
        log.info("proc_operations_answered_for_gone_node node=%s", node_id)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)

    async def stop(self) -> None:
        """Stop asking; the hosts not answered yet are answered as the server stopped."""
        running = dict(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if running:
            await self.store.abandon(
                sorted(set(running.values())),
                handling=HANDLING,
                code=OP_FAILED,
                message=SERVER_STOPPED,
            )
