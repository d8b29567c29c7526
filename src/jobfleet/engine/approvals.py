"""Telling approvers that a confirmation step waits for them.

When a manual confirmation step starts waiting (or an operator asks to notify
again), every enabled notification config of the job's business gets one
``confirm_waiting`` message naming the step's approvers, with a link to the job
page (bk-job's ``/api_execute/<id>``). The rows go through the outbox, like
job-end notifications, so they are retried and survive a restart; the console
shows the same steps on its home page to the users who may confirm them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Row

from jobfleet.domain.approvals import approvers
from jobfleet.engine.notify import row_for
from jobfleet.store.database import Database, now_ms
from jobfleet.store.notify import NotifyStore
from jobfleet.store.outbox import enqueue
from jobfleet.store.secrets import Cipher

log = logging.getLogger(__name__)

EVENT = "confirm_waiting"


def job_link(public_url: str | None, job_id: int) -> str:
    """The job page: absolute when the server knows its public address."""
    path = f"/api_execute/{job_id}"
    return public_url.rstrip("/") + path if public_url else path


def waiting_event(job: Row[Any], step: Row[Any], link: str) -> dict[str, Any]:
    info = (step.config or {}).get("approval_info") or {}
    names = approvers(job.operator, step.config)
    message = str(info.get("approval_message") or "")
    who = ", ".join(names) or "its approvers"
    summary = (
        f"Job {' '.join(str(job.name).split())!r} (#{job.id}) in {job.scope_type} "
        f"{job.scope_id} waits at step {' '.join(str(step.name).split())!r} for "
        f"confirmation by {who}.\n"
        + (f"Message: {' '.join(message.split())}\n" if message else "")
        + f"Open {link} to confirm or end it."
    )
    return {
        "event": EVENT,
        "job_instance_id": job.id,
        "name": job.name,
        "step_instance_id": step.id,
        "step_name": step.name,
        "bk_biz_id": job.bk_biz_id,
        "bk_scope_type": job.scope_type,
        "bk_scope_id": job.scope_id,
        "operator": job.operator,
        "approvers": names,
        "approval_type": info.get("approval_type"),
        "approval_message": message,
        "url": link,
        "summary": summary,
    }


class ApprovalNotifier:
    """The listener of ``Jobs.confirm_waiting``: writes the messages, wakes the sender."""

    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        public_url: str | None,
        max_attempts: int,
        wake: Callable[[], None],
    ) -> None:
        self.notify = NotifyStore(db, cipher)
        self.db = db
        self.public_url = public_url
        self.max_attempts = max_attempts
        self.wake = wake
        self._tasks: set[asyncio.Task[int]] = set()

    def waiting(self, job: Row[Any], step: Row[Any] | None) -> None:
        if step is None:
            return
        task = asyncio.get_running_loop().create_task(self.send(job, step))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, job: Row[Any], step: Row[Any]) -> int:
        """Queue one message per enabled config of the business; how many were queued."""
        try:
            configs = await self.notify.enabled(job.bk_biz_id)
            if not configs:
                return 0
            event = waiting_event(job, step, job_link(self.public_url, job.id))
            body = orjson.dumps(event)
            rows = []
            for config in configs:
                row = row_for(config, event, body, self.notify.cipher, name=EVENT)
                if row is not None:
                    rows.append({**row, "max_attempts": self.max_attempts})
            async with self.db.begin() as conn:
                await enqueue(conn, job.id, None, rows, now_ms())
        except Exception:
            log.exception("approval_notice_failed job=%s step=%s", job.id, step.id)
            return 0
        log.info("approval_notice job=%s step=%s rows=%d", job.id, step.id, len(rows))
        self.wake()
        return len(rows)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
