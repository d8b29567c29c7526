"""The agent's side of the connection: enroll once, then hold one WebSocket to a server.

Everything an agent produces goes to the spool before it goes on the wire, and
leaves the spool only when the server acknowledges it; after a reconnect the
agent tells the server which tasks it holds and sends the rest again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import platform
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from jobfleet import __version__
from jobfleet.agent import jsonwire
from jobfleet.agent.backoff import attempts_after, reconnect_delay
from jobfleet.agent.channel import Channel, ChannelError
from jobfleet.agent.enrollment import (
    Credential,
    EnrollLater,
    enroll,
    load_credential,
    save_credential,
    transient,
)
from jobfleet.agent.executor import ProcessExecutor
from jobfleet.agent.host_load import LoadGauge
from jobfleet.agent.processes import KILL_WAIT, kill_process_tree, reap_without_threads
from jobfleet.agent.procman import ProcessManager
from jobfleet.agent.settings import AgentSettings, host_ipv6, os_name
from jobfleet.agent.spool import Spool
from jobfleet.agent.task import (
    ERROR_CHARS,
    UNREADABLE,
    DownloadOutcome,
    Executor,
    OutputCallback,
    TaskResult,
    UnreadableField,
    Work,
    execute,
    killed_download,
    now_ms,
    script_spec,
)
from jobfleet.agent.transfers import FileWork
from jobfleet.agent.wsclient import WebSocket, connect
from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus

# what the server asks an agent and the agent answers with a ``reply``
Request = (
    protocol.FileList | protocol.FileUpload | protocol.FileSeed | protocol.Proc | protocol.Dispatch
)

if TYPE_CHECKING:
    import httpx

    from jobfleet.agent.peers import PeerServer

log = logging.getLogger(__name__)

CONNECT_PATH = "/api/jobfleet/v1/agents/connect"
# acknowledged chunks are gone from the spool, so a note on an interrupted task sorts last
INTERRUPTED_SEQ = protocol.MAX_AGENT_SEQ
# how many task ids an agent remembers having run (a repeat of one is ignored)
SEEN_TASKS = 100_000
# tries in a row that failed to open a session on the known agent port before the server's
# bootstrap document is asked where that port went (a restart keeps its port: asking after
# every refusal would cost each of thousands of agents an HTTP request to a busy server)
FORGET_CHANNEL_AFTER = 5
# an answer to a request travels in one frame, inside the server's frame limit
MAX_REPLY_BYTES = protocol.MAX_FRAME_BYTES - 64 * 1024
# the server's task and request ids are shorter: a longer one is answered to nobody
MAX_ID_CHARS = 64


def usable_id(value: object) -> str | None:
    """A message's id as the agent answers it, or None when no answer could name it."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int) and not -(10**MAX_ID_CHARS) < value < 10**MAX_ID_CHARS:
        return None
    text = str(value)
    return text if 0 < len(text) <= MAX_ID_CHARS else None


def unreadable(kind: str, exc: BaseException) -> str:
    """Why a server message could not be read, bounded (the bad value may be huge)."""
    detail = str(exc) if isinstance(exc, UnreadableField) else f"{type(exc).__name__}: {exc}"
    return (
        f"jobfleet-agent {__version__} (protocol {protocol.PROTOCOL_VERSION}) could not "
        f"read the server's {kind[:40]!r} message: {detail[:ERROR_CHARS]}"
    )


def pack_frames(encoded: list[bytes], limit: int = protocol.AGENT_FRAME_BYTES) -> list[bytes]:
    """Encoded messages as frames of at most ``limit`` bytes (a larger message alone)."""
    frames: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for item in encoded:
        if group and size + len(item) + 1 > limit:
            frames.append(_frame(group))
            group, size = [], 0
        group.append(item)
        size += len(item) + 1
    if group:
        frames.append(_frame(group))
    return frames


def _frame(group: list[bytes]) -> bytes:
    return group[0] if len(group) == 1 else b"[" + b",".join(group) + b"]"


class _Sender:
    """Coalesces outgoing messages into as few frames per loop turn as the server's
    frame limit allows. Messages wait in a list that one callback a loop turn writes
    out; a task exists only while the server reads slower than the agent writes.

    A message that cannot go out (the connection is closing) is dropped here: the
    spool holds it, and it is sent again after the reconnect."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._loop = asyncio.get_running_loop()
        self._pending: list[protocol.AgentMessage] = []
        self._scheduled = False
        self._draining: asyncio.Task[None] | None = None
        self._stopped = False

    def put(self, message: protocol.AgentMessage) -> None:
        if self._stopped:
            return
        self._pending.append(message)
        if not self._scheduled and self._draining is None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def stop(self) -> None:
        self._stopped = True
        self._pending = []
        if self._draining is not None:
            self._draining.cancel()

    def _frames(self) -> list[bytes]:
        batch, self._pending = self._pending, []
        if len(batch) == 1:
            return [jsonwire.dumps(batch[0])]
        return pack_frames([jsonwire.dumps(m) for m in batch])

    def _flush(self) -> None:
        self._scheduled = False
        if self._stopped or self._draining is not None or not self._pending:
            return
        frames = self._frames()
        try:
            for i, frame in enumerate(frames):
                if not self.ws.writable:
                    self._draining = self._loop.create_task(self._drain(frames[i:]))
                    return
                self.ws.write(frame)
        except ConnectionClosed:
            self.stop()

    async def _drain(self, frames: list[bytes]) -> None:
        try:
            while frames:
                for frame in frames:
                    await self.ws.send(frame)
                frames = self._frames() if self._pending else []
        except ConnectionClosed:
            self._stopped = True
            self._pending = []
        finally:
            self._draining = None


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        executor: Executor | None = None,
        spool: Spool | None = None,
        credential: Credential | None = None,
        http: httpx.AsyncClient | None = None,
        channel: Channel | None = None,
        channels: dict[str, Channel] | None = None,
    ) -> None:
        self.settings = settings
        # resolved at start; dropped when the server cannot be reached, to be found again
        self.channel = channel
        self._pinned: str | None = None
        # which of the servers to dial; another one after a failed connection
        self._server = settings.server
        # each server's channel once resolved (its agent port and pinned CA)
        self._channels: dict[str, Channel] = dict(channels or {})
        # tries in a row that opened no session (reset by one that did)
        self._failed_tries = 0
        if channel is not None:
            self._channels.setdefault(settings.server, channel)
        state = settings.state_dir
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
            os.chmod(state, 0o700)
        # an executor of its own is closed with the agent (one passed in may be shared)
        self._own_executor: ProcessExecutor | None = None
        if executor is None:
            work = (state or Path("/tmp")) / "work"  # noqa: S108 - only without a state dir
            executor = self._own_executor = ProcessExecutor(work)
        self.executor: Executor = executor
        self.spool = spool or Spool(state / "spool" if state else None)
        self.credential = credential
        self.connected = asyncio.Event()
        self._sender: _Sender | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # download tasks (None until started), and why the server killed one of them
        self._downloads: dict[str, asyncio.Future[DownloadOutcome] | None] = {}
        self._killed: dict[str, str] = {}
        # tasks this process accepted, so that a late repeat does not run one again
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._requests: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.on_welcome: Callable[[protocol.Welcome], None] | None = None
        # the inbound peer port is opt-in: without it its module is not loaded
        self.peers: PeerServer | None = None
        if settings.peer_port is not None:
            from jobfleet.agent.peers import PeerServer

            self.peers = PeerServer(settings.peer_listen, settings.peer_port, settings.peer_address)
        self.files = FileWork(self._base, self._auth_headers, self._tls, http, self.peers)
        self.procs = ProcessManager(state)
        self.load = LoadGauge()
        # reports the host's load while connected, when the server asks (its welcome)
        self._stats: asyncio.Task[None] | None = None

    def _base(self) -> str:
        return self.channel.base if self.channel is not None else self._server

    def _tls(self) -> ssl.SSLContext | None:
        return self.channel.tls if self.channel is not None else self.settings.tls(self._server)

    async def _resolve_channel(self) -> Channel:
        if self.channel is None:
            known = self._channels.get(self._server)
            if known is not None:
                self.channel = known
            else:
                self.channel, self._pinned = await self.settings.channel(
                    self._pinned, self._server
                )
                self._channels[self._server] = self.channel
        return self.channel

    def _forget_channel(self) -> None:
        """The next try asks the server's bootstrap document where its agent port is."""
        log.info("agent_channel_forgotten server=%s tries=%d", self._server, self._failed_tries)
        self.channel = None
        self._channels.pop(self._server, None)

    def _next_server(self) -> bool:
        """Move to another server of the cluster; False if there is only one."""
        others = [s for s in self.settings.servers if s != self._server]
        if not others:
            return False
        # a random one: agents of a node that died spread over the others
        self._server = random.choice(others)
        self.channel = None
        log.info("agent_server_next server=%s", self._server)
        return True

    def _auth_headers(self) -> dict[str, str]:
        cred = self.credential
        assert cred is not None
        return {"Authorization": f"Agent {cred.agent_id}:{cred.agent_secret}"}

    async def ensure_credential(self) -> Credential:
        if self.credential is None and self.settings.state_dir is not None:
            self.credential = load_credential(self.settings.state_dir)
        attempt = 0
        while self.credential is None:
            try:
                self.credential = await enroll(self.settings, channel=await self._resolve_channel())
            except (EnrollLater, OSError) as exc:
                # a server that is starting, busy or limiting this address's enrollments
                # is asked again later, like a reconnect; a refusal of the token, or a
                # server whose certificate does not verify, is final
                if not transient(exc):
                    raise
                attempt += 1
                delay = reconnect_delay(attempt, self.settings.max_backoff)
                log.warning("agent_enroll_retry in=%.1fs error=%s", delay, exc)
                await asyncio.sleep(delay)
                continue
            if self.settings.state_dir is not None:
                save_credential(self.settings.state_dir, self.credential)
            log.info(
                "agent_enrolled agent=%s host=%s",
                self.credential.agent_id,
                self.credential.bk_host_id,
            )
        return self.credential

    def recover_interrupted(self) -> None:
        """Tasks a previous agent process left running: stop their processes, report them."""
        for task_id, pgid in self.spool.interrupted():
            stopped = kill_process_tree(pgid) if pgid else 0
            if stopped:
                what = f"{stopped} of its processes were still running and were stopped"
            elif pgid:
                # the script had ended, or the watchdog stopped it when the agent went:
                # either way its exit status was never recorded
                what = (
                    "none of its processes were left running; its result was lost with "
                    "the agent"
                )
            else:
                what = (
                    "no process of it was recorded (a file transfer, or a script not yet "
                    "started); its result was lost with the agent"
                )
            now = now_ms()
            self.spool.finish(
                task_id,
                protocol.done(
                    task_id,
                    INTERRUPTED_SEQ,
                    status=int(HostStatus.GSE_AGENT_ERROR),
                    exit=None,
                    start=None,
                    end=now,
                    data=f"jobfleet-agent: the agent restarted while this task ran; {what}\n",
                ),
            )
            log.warning("task_interrupted task=%s processes_stopped=%d", task_id, stopped)

    async def run_forever(self) -> None:
        reap_without_threads(asyncio.get_running_loop())
        self.procs.start()
        if self.peers is not None:
            try:
                await self.peers.start()
            except OSError as exc:
                # files then come from the server, as without the option
                log.error("peer_port_unavailable port=%s error=%s", self.peers.port, exc)
                self.peers = self.files.peers = None
        cred = await self.ensure_credential()
        self.recover_interrupted()
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            began = loop.time()
            try:
                await self._session(cred, await self._resolve_channel())
                attempt = 0
            except ChannelError as exc:
                log.error("agent_channel_refused server=%s error=%s", self._server, exc)
                self._next_server()
            except (
                OSError,
                WebSocketException,
                TimeoutError,
            ) as exc:
                if (
                    isinstance(exc, InvalidStatus)
                    and exc.response.status_code == 403
                ):
                    log.warning(
                        "agent_credential_refused reason=revoked or unknown, or a plain-text "
                        "connection; to enroll again remove credential.json from the state "
                        "dir and give a new token"
                    )
                elif (
                    isinstance(exc, ConnectionClosed)
                    and exc.rcvd is not None
                    and exc.rcvd.code == protocol.CLOSE_REPLACED
                ):
                    # this process's own reconnects never get it: its old socket is gone
                    log.warning(
                        "agent_replaced agent=%s reason=another process connected with the "
                        "same credential (a second agent on this state dir, or a machine "
                        "cloned with it); each replaces the other, and tasks for the host go "
                        "to whichever is connected. Give each machine its own state dir and "
                        "enrollment",
                        cred.agent_id,
                    )
                else:
                    log.info("agent_disconnected error=%s", exc)
                if isinstance(exc, OSError) and not self.connected.is_set():
                    self._failed_tries += 1
                    if (
                        self._failed_tries % FORGET_CHANNEL_AFTER == 0
                        # another certificate there: the port is no longer this server's
                        or isinstance(exc, ssl.SSLCertVerificationError)
                    ):
                        self._forget_channel()
                    # no session began: try another node
                    self._next_server()
            except Exception:
                # whatever ended the session, the agent reconnects with its backoff
                log.exception("agent_session_failed")
            if self.connected.is_set():
                self._failed_tries = 0
            attempt = attempts_after(
                attempt, established=self.connected.is_set(), lasted=loop.time() - began
            )
            self.connected.clear()
            self._sender = None
            if self._stopping:
                break
            attempt += 1
            # full jitter keeps thousands of agents from reconnecting in step
            delay = reconnect_delay(attempt, self.settings.max_backoff)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Stop: the tasks running are killed (their spool entries say they were
        interrupted, for the next start to report) before the watchdog is let go."""
        self._stopping = True
        running = [*self._tasks.values(), *self._requests]
        for task in running:
            task.cancel()
        if running:
            # each kills its processes as it ends (the cgroup kill waits up to KILL_WAIT)
            await asyncio.wait(running, timeout=2 * KILL_WAIT)
        await self.files.close()
        if self.peers is not None:
            await self.peers.close()
        await self.procs.stop()
        if self._own_executor is not None:
            reaper = self._own_executor.close()
            if reaper is not None:
                # its cgroup is gone and its tasks killed by the time the agent has stopped
                await asyncio.to_thread(reaper.join)

    async def _session(self, cred: Credential, channel: Channel) -> None:
        headers = {"Authorization": f"Agent {cred.agent_id}:{cred.agent_secret}"}
        async with await connect(
            channel.ws_url + CONNECT_PATH,
            additional_headers=headers,
            ping_interval=self.settings.heartbeat,
            ping_timeout=self.settings.heartbeat,
            # what the server sends is not bound by its own frame limit (a long script)
            max_size=64 * 1024 * 1024,
            open_timeout=15,
            close_timeout=2,
            ssl=channel.tls,
        ) as ws:
            sender = _Sender(ws)
            try:
                hello = protocol.hello(
                    version=__version__,
                    hostname=self.settings.hostname or socket.gethostname(),
                    os=platform.system(),
                    os_name=os_name(),
                    ipv6=host_ipv6(self.settings),
                    labels=self.settings.labels,
                    known=self.spool.known(),
                    peer=self.peers.address if self.peers is not None else "",
                    load=self.load.read(),
                )
                await ws.send(jsonwire.dumps(hello))
                for message in self.spool.pending():
                    sender.put(message)
                self._sender = sender
                self.connected.set()
                await ws.deliver(self._frame)
            finally:
                self._sender = None
                sender.stop()
                stats, self._stats = self._stats, None
                if stats is not None:
                    stats.cancel()

    def _frame(self, frame: str | bytes) -> None:
        """One frame from the server: a message or a list of them. The server is pinned
        and its messages are read as their types, but one this agent cannot read is
        refused on its own (logged), never the end of the others or of the agent."""
        try:
            decoded = jsonwire.loads(frame)
        except (ValueError, RecursionError) as exc:
            log.warning("server_frame_refused error=not JSON (%s)", type(exc).__name__)
            return
        for message in decoded if isinstance(decoded, list) else (decoded,):
            kind = message.get("t") if isinstance(message, dict) else None
            if not isinstance(kind, str):
                log.warning("server_message_refused error=not a message with a type")
                continue
            try:
                self._handle(cast(protocol.ServerMessage, message))
            except UNREADABLE as exc:
                log.warning(
                    "server_message_refused kind=%s error=%s: %s",
                    kind[:40], type(exc).__name__, str(exc)[:ERROR_CHARS],
                )

    def _send(self, message: protocol.AgentMessage) -> None:
        if self._sender is not None:
            self._sender.put(message)

    def _handle(self, message: protocol.ServerMessage) -> None:
        if message["t"] == "run":
            self._start(message)
        elif message["t"] == "ack":
            for task_id, seq in message.get("acks") or []:
                self.spool.ack(str(task_id), int(seq))
        elif message["t"] == "kill":
            task_id = str(message.get("id"))
            reason = str(message.get("reason") or "terminate")
            if task_id in self._downloads:
                self._kill_download(task_id, reason)
            else:
                self.executor.kill(task_id, reason)
        elif message["t"] in ("file_list", "file_upload", "file_seed", "proc", "dispatch"):
            self._answer(message)
        elif message["t"] == "welcome":
            every = message.get("stats_every")
            if every is not None and (
                isinstance(every, bool)
                or not isinstance(every, int | float)
                or not math.isfinite(every)
            ):
                # read here, not in the task, where its error would be lost; the rest of
                # the welcome still counts
                log.warning("server_welcome_stats_refused value=%s", str(every)[:ERROR_CHARS])
                every = None
            if every and self._stats is None:
                self._stats = asyncio.get_running_loop().create_task(self._report_load(every))
            if self.on_welcome is not None:
                self.on_welcome(message)

    async def _report_load(self, every: float) -> None:
        """The host's load every ``every`` seconds (at least 1), while connected."""
        while True:
            await asyncio.sleep(max(1.0, float(every)))
            load = self.load.read()
            if load is not None:
                self._send(protocol.stats(load))

    def _answer(self, message: Request) -> None:
        request = usable_id(message.get("id"))
        if request is None:
            raise ValueError("the request's id is missing or not usable")

        async def answer() -> None:
            try:
                reply = await self._work(request, message)
            except Exception as exc:
                log.exception("request_failed kind=%s", message.get("t"))
                # a field error names the field; any other error may quote a value of any
                # size, and the whole answer must fit the server's frame
                error = (
                    unreadable(message["t"], exc)
                    if isinstance(exc, UnreadableField)
                    else str(exc)[:ERROR_CHARS]
                )
                reply = protocol.reply(request, status=int(HostStatus.GSE_TASK_ERROR), error=error)
            try:
                encoded = jsonwire.dumps(reply)
            except (TypeError, ValueError) as exc:
                # unanswered, the request would hold the server until its own timeout
                log.error("request_reply_unencodable kind=%s error=%s", message.get("t"), exc)
                self._send(
                    protocol.reply(
                        request,
                        status=int(HostStatus.GSE_TASK_ERROR),
                        error=f"the answer could not be encoded: {exc}",
                    )
                )
                return
            # the answer's own size, without the type and id around it
            size = len(encoded) - len(jsonwire.dumps(protocol.reply(request))) + 1
            if size > MAX_REPLY_BYTES:
                # the server would close the connection on it, and it would be asked again
                reply = protocol.reply(
                    request,
                    status=int(HostStatus.GSE_FILE_ERROR),
                    error=f"the answer is too large to send ({size} bytes, over "
                    f"{MAX_REPLY_BYTES}): name fewer files",
                )
            self._send(reply)

        task = asyncio.get_running_loop().create_task(answer())
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _work(self, request: str, message: Request) -> protocol.Reply:
        if message["t"] == "file_list":
            return await self.files.list_sources(request, message)
        if message["t"] == "file_upload":
            return await self.files.upload(request, message)
        if message["t"] == "file_seed":
            return await self.files.seed(request, message)
        if message["t"] == "proc":
            answer = await self.procs.handle(dict(message))
        else:
            answer = self.procs.deliver(dict(message))
        return protocol.reply(request, **answer)

    def _start(self, message: protocol.Run) -> None:
        task_id = usable_id(message.get("id"))
        if task_id is None:
            raise ValueError("the task's id is missing or not usable")
        if task_id in self._tasks or self.spool.holds(task_id) or task_id in self._seen:
            # a repeat after a reconnect: the task runs, its result is on its way, or it
            # was stored already (a task id names one attempt, so it never runs twice)
            return
        self._seen_order.append(task_id)
        self._seen.add(task_id)
        if len(self._seen_order) > SEEN_TASKS:
            self._seen.discard(self._seen_order.popleft())
        self.spool.accept(task_id)
        kind = message.get("kind")
        try:
            if kind == protocol.DOWNLOAD:
                run = self._download(task_id, cast(protocol.DownloadRun, message))
            elif kind is None:
                run = self._script(task_id, cast(protocol.ScriptRun, message))
            else:
                run = _unknown_kind(kind)
        except UNREADABLE as exc:
            # accepted already: the task ends failed with the reason, through the spool
            # like any result, rather than leave the server waiting out the step's timeout
            log.warning("task_unreadable task=%s error=%s", task_id, type(exc).__name__)
            run = _failed_at_once(unreadable(protocol.RUN, exc))
        task = asyncio.get_running_loop().create_task(self._execute(task_id, run))
        self._tasks[task_id] = task
        task.add_done_callback(lambda _t: self._forget(task_id))

    def _forget(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)
        self._downloads.pop(task_id, None)
        self._killed.pop(task_id, None)

    def _kill_download(self, task_id: str, reason: str) -> None:
        """Stop a download: its partial file is removed and its result says why."""
        if task_id in self._killed:
            # a repeat, or the timeout after a terminate: a second cancellation would cut
            # the download's cleanup short (a swarm waits for its peer threads to end
            # before its file is closed)
            return
        self._killed[task_id] = reason
        running = self._downloads.get(task_id)
        if running is not None:
            running.cancel()

    def _script(self, task_id: str, message: protocol.ScriptRun) -> Work:
        spec = script_spec(task_id, message, self.settings)

        async def run(
            on_output: OutputCallback,
        ) -> tuple[TaskResult, list[protocol.FileItem] | None]:
            def on_started(pgid: int) -> None:
                self.spool.set_pgid(task_id, pgid)

            return await self.executor.run(spec, on_output, on_started), None

        return run

    def _download(self, task_id: str, message: protocol.DownloadRun) -> Work:
        def report(items: list[protocol.FileItem]) -> None:
            self._send(protocol.file_log(task_id, items))

        start_ms = now_ms()
        self._downloads[task_id] = None

        async def run(on_output: OutputCallback) -> DownloadOutcome:
            finals: list[protocol.FileItem] = []
            if task_id not in self._killed:
                running: asyncio.Future[DownloadOutcome] = asyncio.ensure_future(
                    self.files.download(message, on_output, report, finals)
                )
                self._downloads[task_id] = running
                # the agent keeps the step's timeout itself, as it does for a script
                timeout = message.get("timeout")
                timer = (
                    asyncio.get_running_loop().call_later(
                        timeout, self._kill_download, task_id, "timeout"
                    )
                    if isinstance(timeout, int) and timeout > 0
                    else None
                )
                try:
                    return await running
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if task_id not in self._killed or (current and current.cancelling()):
                        raise  # the agent is stopping: the task is not over
                finally:
                    running.cancel()
                    if timer is not None:
                        timer.cancel()
            return killed_download(self._killed[task_id], start_ms, message, finals)

        return run

    async def _execute(self, task_id: str, work: Work) -> None:
        await execute(task_id, work, self.spool, self._send)


def _unknown_kind(kind: object) -> Work:
    """A task of a kind this agent does not know (a newer server's): it ends failed at
    once, with the reason, rather than run as a script or wait out the step's timeout."""
    return _failed_at_once(
        f"jobfleet-agent {__version__} (protocol {protocol.PROTOCOL_VERSION}) does not "
        f"know tasks of kind {str(kind)[:40]!r}: upgrade it"
    )


def _failed_at_once(message: str) -> Work:
    async def run(
        _on_output: OutputCallback,
    ) -> tuple[TaskResult, list[protocol.FileItem] | None]:
        now = now_ms()
        return TaskResult(int(HostStatus.GSE_TASK_ERROR), -1, now, now, message=message), None

    return run
