"""Agent messages the server would not take: counted, logged and audited, a bounded amount.

A hostile or broken agent can send a bad message as often as it likes, so nothing
here costs a write or a log line per message: counts go up in memory, the log
says the first refusal of each kind per agent and window, and the audit log gets
one entry per agent, reason and window, carrying how many there were.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from jobfleet.domain.protocol import clean_text
from jobfleet.store.audit import AuditLog, entry

log = logging.getLogger(__name__)

AUDIT_ACTION = "refuse_agent_message"
# log lines about refusals per window, over all agents: a flood cannot fill the log
LOG_LINES_PER_WINDOW = 100
# characters of a refusal's detail logged and audited: it quotes what the agent sent
DETAIL_CHARS = 200


class Refuser(Protocol):
    """Who refused a message: the connection's agent and host, and where it came from."""

    agent_id: str
    bk_host_id: int
    peer: str


@dataclass
class _Window:
    host: int
    peer: str
    detail: str
    count: int = 0


class Refusals:
    def __init__(self, audit: AuditLog | None, window: float = 60.0) -> None:
        self.audit = audit
        self.window = window
        # refused messages since start, by reason
        self.counts: Counter[str] = Counter()
        self._open: dict[tuple[str, str], _Window] = {}
        self._flusher: asyncio.Task[None] | None = None
        # stop's last flush must end after a periodic one under way (whose task no
        # longer shows in ``_flusher``), or stop returns while that one still writes
        self._flushing = asyncio.Lock()
        self._logged = 0
        self._log_window_end = 0.0

    def refuse(self, conn: Refuser, reason: str, detail: str, *, audit: bool = True) -> None:
        """Count one refused message; ``audit=False`` for what an honest agent also sends
        (a repeat of a result the server already has)."""
        self.counts[reason] += 1
        if not audit:
            return
        key = (conn.agent_id, reason)
        window = self._open.get(key)
        if window is None:
            detail = detail[:DETAIL_CHARS]
            window = self._open[key] = _Window(conn.bk_host_id, conn.peer, detail)
            self._log(
                "agent_message_refused agent=%s host=%s peer=%s reason=%s detail=%s",
                conn.agent_id,
                conn.bk_host_id,
                conn.peer,
                reason,
                detail,
            )
            if self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_later())
        window.count += 1

    def _log(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now >= self._log_window_end:
            self._log_window_end = now + self.window
            self._logged = 0
        self._logged += 1
        if self._logged <= LOG_LINES_PER_WINDOW:
            log.warning(fmt, *args)
        elif self._logged == LOG_LINES_PER_WINDOW + 1:
            log.warning("agent_message_refused_log_paused for=%gs", self.window)

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self.window)
        finally:
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Write one audit entry per agent and reason refused since the last flush."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        entries, self._open = self._open, {}
        if self.audit is None or not entries:
            return
        rows = [
            entry(
                app_code="",
                username="",
                action=AUDIT_ACTION,
                resource_type="agent",
                resource_id=agent_id[:128],
                detail={
                    "reason": reason,
                    "count": window.count,
                    "bk_host_id": window.host,
                    "first": clean_text(window.detail),
                    "window_seconds": self.window,
                },
                source_ip=window.peer[:64],
            )
            for (agent_id, reason), window in entries.items()
        ]
        try:
            await self.audit.record_all(rows)
        except Exception as exc:
            # the database is away (at shutdown the server closes it after the gateway
            # stops, but it may fail at any time): one line for the batch, as a
            # traceback per flush would bury the log
            log.warning(
                "refusal_audit_failed refusals=%d agents=%d error=%s",
                sum(w.count for w in entries.values()),
                len({key[0] for key in entries}),
                f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
            )

    async def stop(self) -> None:
        task, self._flusher = self._flusher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.flush()
