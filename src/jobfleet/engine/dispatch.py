"""Sending host tasks to agents, and following agents that come and go while
their hosts have tasks (``AgentEvents`` is what the gateway calls)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus
from jobfleet.engine.ports import AgentDirectory, AgentLink
from jobfleet.engine.results import Results, gse_error_code
from jobfleet.engine.rpc import AgentRpc
from jobfleet.engine.settings import EngineSettings
from jobfleet.engine.tracking import SENT, WAITING, StepRun, Tracker
from jobfleet.engine.writer import NOTE_SEQ, ResultWriter
from jobfleet.store.database import now_ms
from jobfleet.store.jobs import HostResult, JobStore

log = logging.getLogger(__name__)

OPEN = (HostStatus.WAITING, HostStatus.RUNNING)


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        agents: AgentDirectory,
        tracker: Tracker,
        results: Results,
        writer: ResultWriter,
        settings: EngineSettings,
    ) -> None:
        self.store = store
        self.agents = agents
        self.tracker = tracker
        self.results = results
        self.writer = writer
        self.settings = settings
        # hosts whose agent dropped while they had tasks: ended if it stays away
        self._lost: dict[int, asyncio.TimerHandle] = {}
        self._late: set[asyncio.Task[None]] = set()
        # hosts whose agents this node held before a restart, and until when (monotonic)
        # they may take to connect again
        self._returning: set[int] = set()
        self._returning_until = 0.0

    def expect_back(self, hosts: set[int]) -> None:
        """Agents connected to this node before it stopped come back within the recovery
        window; a job started in it meanwhile waits for them as a recovered job does."""
        self._returning = set(hosts)
        self._returning_until = time.monotonic() + self.settings.recovery_window

    def agent_wait(self, host: int, recovering: bool) -> float:
        """How long a host's absent agent may still take to connect before its host (a
        target, or a file step's source) fails: a job taken over after a restart gives
        every agent the whole recovery window (they held its tasks, and reconnect on
        their own schedule); a new job waits, until the window's end, only for agents
        this node held before it restarted; 0 for any other."""
        if recovering:
            return self.settings.recovery_window
        if host in self._returning:
            return max(0.0, self._returning_until - time.monotonic())
        return 0.0

    async def stop(self) -> None:
        for handle in self._lost.values():
            handle.cancel()
        self._lost.clear()
        late = list(self._late)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def dispatch(self, run: StepRun, no_agent: set[int], recovering: bool) -> None:
        """Send the run's pending hosts their task; end those that have no agent."""
        # a refusal follows from the stored values alone: a host refused now was
        # refused before a restart too, and never sent anything
        by_reason: dict[str, list[int]] = {}
        for host in run.pending:
            if reason := run.refusal(host):
                by_reason.setdefault(reason, []).append(host)
        for reason, hosts in by_reason.items():
            self.writer.conclude(run, hosts, HostStatus.SUBMIT_FAILED, reason)
        refused = {h for hosts in by_reason.values() for h in hosts}
        agents = self.agents
        unseen = [h for h in run.pending if h not in refused and agents.for_host(h) is None]
        if unseen:
            # an agent that just came to another node may not be in this node's map yet
            located = await agents.refresh(unseen)
            online = {
                h
                for h, s in run.pending.items()
                if s == WAITING and h not in refused and agents.for_host(h) is not None
            }
        else:
            # every host's agent was found just above, with nothing awaited since
            located = True
            online = {h for h, s in run.pending.items() if s == WAITING and h not in refused}
        if online:
            await self.store.mark_running(run.step_id, run.execute_count, list(online))
        # each host looked up once after the wait: an agent may have come or gone in it
        offline: list[int] = []
        for host, state in list(run.pending.items()):
            if host in refused:
                continue
            conn = agents.for_host(host)
            if conn is None:
                offline.append(host)
                continue
            if state == WAITING:
                if host in online:
                    self._send(run, host, conn)
            elif run.task_id(host) not in conn.known:
                conn.send(run.message(host))
        if not offline:
            return
        missing: list[int] = []
        waited: list[tuple[int, float]] = []
        absent: list[int] = []
        for host in offline:
            if host in no_agent:
                missing.append(host)
            elif (wait := self.agent_wait(host, recovering)) > 0:
                waited.append((host, wait))
            else:
                absent.append(host)
        if missing:
            self.writer.conclude(
                run,
                missing,
                HostStatus.AGENT_NOT_INSTALLED,
                "jobfleet: no agent is installed on this host\n",
            )
        for host, wait in waited:
            self._expect_agent(host, wait)
        if not located:
            # the cluster's map is out of reach (Redis away): an agent this node does
            # not see may be connected to another node, so it gets the grace of an
            # agent that dropped, not an end at once
            for host in absent:
                self._expect_agent(host, self.settings.agent_lost_grace)
        elif absent:
            self.writer.conclude(
                run,
                absent,
                HostStatus.GSE_AGENT_ERROR,
                "jobfleet: the agent of this host is not connected\n",
            )

    def _send(self, run: StepRun, host: int, conn: AgentLink) -> None:
        if run.refusal(host):
            # ended by ``dispatch``; an agent that connects meanwhile gets nothing
            return
        run.pending[host] = SENT
        self.results.sent((run.step_id, run.execute_count, host))
        conn.send(run.message(host))

    def kill(self, run: StepRun, host: int, reason: str, *, sent_only: bool = False) -> bool:
        """Ask a host's agent to kill its task; False if it could not be asked."""
        if sent_only and run.pending.get(host) != SENT:
            return False
        return self.kill_task(run.task_id(host), host, reason)

    def kill_task(self, task_id: str, host: int, reason: str) -> bool:
        """Ask a host's agent to kill one task; False if it could not be asked. Never
        raises: the host ends whatever its agent does, and a kill that cannot reach an
        agent (gone, or its node out of reach) must not stop the kills after it."""
        conn = self.agents.for_host(host)
        if conn is None:
            return False
        try:
            conn.send(protocol.kill(task_id, reason))
        except Exception:
            log.warning("kill_not_sent host=%s task=%s", host, task_id, exc_info=True)
            return False
        return True

    async def conclude_hosts(
        self, step_id: int, execute_count: int, hosts: list[int], status: int, note: str
    ) -> None:
        """End hosts in the store with no result from their agent: no task was sent (a
        file step whose sources failed), or an operator skipped the wait for one."""
        end = now_ms()
        chunks = [
            {
                "step_instance_id": step_id,
                "execute_count": execute_count,
                "bk_host_id": h,
                "seq": NOTE_SEQ,
                "content": note,
            }
            for h in hosts
            if note
        ]
        finals = [
            HostResult(
                step_id,
                execute_count,
                h,
                int(status),
                end_time=end,
                error_code=gse_error_code(status),
            )
            for h in hosts
        ]
        await self.store.ingest(chunks, finals)

    # agents coming and going ------------------------------------------------
    def agent_online(self, conn: AgentLink) -> None:
        host = conn.bk_host_id
        # back: if it drops again its tasks get the grace, not what is left of the window
        self._returning.discard(host)
        handle = self._lost.pop(host, None)
        if handle is not None:
            handle.cancel()
        for run in self.tracker.for_host(host):
            if run.task_id(host) in conn.known or run.refusal(host):
                # a refused host is ended by ``dispatch`` and never sent anything
                continue
            if run.pending[host] == WAITING:
                self._later(self._send_late(run, host))
            else:
                self._later(self._send_again(run, host))

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _send_late(self, run: StepRun, host: int) -> None:
        await self.store.mark_running(run.step_id, run.execute_count, [host])
        conn = self.agents.for_host(host)
        if conn is not None and run.pending.get(host) == WAITING:
            self._send(run, host, conn)

    async def _send_again(self, run: StepRun, host: int) -> None:
        """A task sent before that the agent does not hold now: send it again, unless
        its result is stored already (another node may have stored it)."""
        rows = await self.store.hosts(run.step_id, run.execute_count, host_ids=[host])
        if rows and rows[0].status not in OPEN:
            run.finish(host)
            self.tracker.forget(host, run.key())
            return
        conn = self.agents.for_host(host)
        if conn is not None and run.pending.get(host) == SENT:
            conn.send(run.message(host))

    def resend_all(self) -> None:
        """Messages between nodes may have been lost: send again what is still awaited."""
        for run in list(self.tracker.runs.values()):
            for host, state in list(run.pending.items()):
                if state == SENT and self.agents.for_host(host) is not None:
                    self._later(self._send_again(run, host))

    def check_absent(self, run: StepRun) -> None:
        """Hosts whose agent is nowhere now (its node died unseen) end after the grace;
        those awaited whose agent is found now with no news of it (the cluster's map
        read again after Redis came back) get their task."""
        for host in run.pending:
            conn = self.agents.for_host(host)
            if conn is None and host not in self._lost:
                self._expect_agent(host, self.settings.agent_lost_grace)
            elif conn is not None and host in self._lost:
                self.agent_online(conn)

    def agent_offline(self, conn: AgentLink) -> None:
        self.host_offline(conn.bk_host_id)

    def host_offline(self, host: int) -> None:
        if self.tracker.by_host.get(host):
            self._expect_agent(host, self.settings.agent_lost_grace)

    def _expect_agent(self, host: int, within: float) -> None:
        if host not in self._lost:
            self._lost[host] = asyncio.get_running_loop().call_later(
                within, self._agent_lost, host, within
            )

    def _agent_lost(self, host: int, waited: float) -> None:
        self._lost.pop(host, None)
        conn = self.agents.for_host(host)
        if conn is not None:
            # it is back (perhaps on another node, with no news of it reaching here)
            self.agent_online(conn)
            return
        for run in self.tracker.for_host(host):
            log.warning("agent_lost host=%s step=%s", host, run.step_id)
            self.writer.conclude(
                run,
                [host],
                HostStatus.GSE_AGENT_ERROR,
                f"jobfleet: the agent lost its connection and did not come back "
                f"within {waited:g}s\n",
            )


class AgentEvents:
    """What the gateway tells the engine: agents that come and go, and what they send."""

    def __init__(self, dispatcher: Dispatcher, writer: ResultWriter, rpc: AgentRpc) -> None:
        self.dispatcher = dispatcher
        self.writer = writer
        self.rpc = rpc

    def agent_online(self, conn: AgentLink) -> None:
        self.dispatcher.agent_online(conn)

    def agent_offline(self, conn: AgentLink) -> None:
        self.dispatcher.agent_offline(conn)

    def connection_closed(self, conn: AgentLink) -> None:
        self.writer.agent_gone(conn)

    def agent_message(self, conn: AgentLink, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind in (protocol.OUTPUT, protocol.DONE, protocol.FILE_LOG):
            self.writer.put(conn, message)
        elif kind == protocol.REPLY:
            self.rpc.reply(conn, message)
