"""The cron scheduler: every running cron's due slot becomes a job, once.

Each pass finds running crons whose ``next_fire_at`` has come (on the cron clock,
``jobfleet.domain.cron.CronClock``). For one due slot, one transaction moves
``next_fire_at`` on with a compare-and-set (only the node whose update matched
goes on), records the slot in ``cron_firings`` (its primary key refuses a second
row for a slot) and writes the job's rows through ``PlanLauncher.launch``. The job
is born leased to this node, so if the node dies between the commit and
``Jobs.resume_job`` another node's lease recovery runs it. Nothing is lost and
nothing runs twice, whatever the number of server processes on the database.

A cron that missed slots while no server ran fires its most recent missed slot if
that is at most ``cron_grace`` (wall-clock) seconds old; earlier ones are
recorded as skipped. A one-shot cron pauses after its slot (fired, failed or
skipped) and keeps no next slot.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from jobfleet.domain.cron import CronClock, Decision, Schedule, decide
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import CronStatus, LaunchMode, ScopeType
from jobfleet.engine.acting import refusal
from jobfleet.engine.jobs import Jobs
from jobfleet.engine.plans import PlanLauncher
from jobfleet.engine.settings import EngineSettings
from jobfleet.engine.submit import Scope
from jobfleet.store.audit import AuditLog
from jobfleet.store.crons import (
    FAILED,
    FIRED,
    SKIPPED,
    CronStore,
    open_values,
    seal_plan_passwords,
)
from jobfleet.store.identity import IdentityStore
from jobfleet.store.outage import OutageLog
from jobfleet.store.secrets import Cipher

log = logging.getLogger(__name__)

# crons handled per query; a full batch is followed by another one at once
BATCH = 100
# wake a little after a slot so that the cron clock has surely reached it
SLACK = 0.005


def schedule_of(row: Row[Any]) -> Schedule:
    if row.expression:
        return Schedule(row.expression, row.timezone)
    return Schedule(None, row.timezone, row.next_fire_at)


class CronScheduler:
    def __init__(
        self,
        crons: CronStore,
        plans: PlanLauncher,
        engine: Jobs,
        identity: IdentityStore,
        cipher: Cipher,
        settings: EngineSettings,
        audit: AuditLog,
    ) -> None:
        self.audit = audit
        self.crons = crons
        self.plans = plans
        self.engine = engine
        self.identity = identity
        self.cipher = cipher
        self.settings = settings
        self.clock = CronClock(settings.cron_time_scale)
        # the grace window on the cron clock
        self.grace = math.ceil(settings.cron_grace * self.clock.scale)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def now(self) -> int:
        return self.clock.now(time.time())

    async def _run(self) -> None:
        try:
            await self.realign()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cron_realign_failed")
        outage = OutageLog(log, "cron_pass_failed")
        while True:
            delay = self.settings.cron_tick
            try:
                await self.run_due()
                delay = await self._delay()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception:
                outage.failed()
            await asyncio.sleep(delay)

    async def _delay(self) -> float:
        """Until the soonest slot, at most one tick (crons started on other nodes)."""
        tick = self.settings.cron_tick
        earliest = await self.crons.earliest()
        if earliest is None:
            return tick
        return min(tick, max(self.clock.wall(earliest) - time.time(), 0.0) + SLACK)

    async def realign(self) -> None:
        """Fix slots that no longer match the cron clock (the time scale was changed)."""
        now = self.now()
        for row in await self.crons.running():
            if row.expression:
                expected = schedule_of(row).after(now)
                if expected is None or row.next_fire_at <= expected:
                    continue
            elif row.execute_time is not None:
                expected = self.clock.slot_of(row.execute_time)
                if expected == row.next_fire_at:
                    continue
            else:
                continue
            if await self.crons.move(row.id, row.next_fire_at, {"next_fire_at": expected}):
                log.warning(
                    "cron_realigned cron=%s from=%s to=%s", row.id, row.next_fire_at, expected
                )

    async def run_due(self) -> int:
        """Handle every due slot; the number of jobs launched."""
        launched = 0
        while True:
            now = self.now()
            rows = await self.crons.due(now, BATCH)
            for row in rows:
                if await self._handle(row, now):
                    launched += 1
            if len(rows) < BATCH:
                return launched

    async def _handle(self, row: Row[Any], now: int) -> bool:
        decision = decide(schedule_of(row), row.next_fire_at, now, self.grace)
        moved: dict[str, Any] = {"next_fire_at": decision.next}
        if decision.next is None:
            # a one-shot cron (or a schedule with no date left) is done
            moved["status"] = int(CronStatus.PAUSED)
        if decision.fire is None:
            await self._settle(row.id, decision, moved, None)
            log.warning(
                "cron_slot_skipped cron=%s slot=%s reason=%r", row.id, decision.due, decision.reason
            )
            return False
        moved["last_fire_at"] = decision.fire
        try:
            job_id = await self._fire(row, decision, moved)
        except JobError as exc:
            await self._settle(row.id, decision, moved, exc.message)
            await self._audit(row, "fire_cron_failed", decision.fire, None, exc.message)
            log.warning(
                "cron_fire_failed cron=%s slot=%s code=%s message=%r",
                row.id,
                decision.fire,
                exc.code,
                exc.message,
            )
            return False
        except IntegrityError:
            # the slot already has its row: it was handled, only the schedule moves on
            await self._settle(row.id, decision, moved, None, record=False)
            log.warning("cron_slot_already_handled cron=%s slot=%s", row.id, decision.fire)
            return False
        except SQLAlchemyError:
            raise
        except Exception as exc:
            log.exception("cron_fire_error cron=%s slot=%s", row.id, decision.fire)
            await self._settle(row.id, decision, moved, f"internal error: {type(exc).__name__}")
            return False
        if job_id is None:
            return False
        self.engine.resume_job(job_id)
        await self._audit(row, "fire_cron", decision.fire, job_id, "")
        log.info("cron_fired cron=%s slot=%s job=%s", row.id, decision.fire, job_id)
        return True

    async def _audit(
        self, row: Row[Any], action: str, slot: int, job_id: int | None, message: str
    ) -> None:
        """A firing in the audit log, as the user the cron acts for; never stops the pass."""
        try:
            await self.audit.record(
                app_code=row.app_code,
                username=row.operator or row.last_modify_user or row.creator,
                action=action,
                resource_type="cron_firing",
                resource_id=str(row.id),
                scope_type=row.scope_type,
                scope_id=row.scope_id,
                detail={"slot": slot, "job_instance_id": job_id, "message": message[:512]},
                source_ip="",
            )
        except Exception:
            log.exception("cron_audit_failed cron=%s slot=%s", row.id, slot)

    async def _fire(self, row: Row[Any], decision: Decision, moved: dict[str, Any]) -> int | None:
        """One transaction: claim the slot, record it, write the job. None: another node won."""
        assert decision.fire is not None
        async with self.crons.db.begin() as conn:
            if not await self.crons.advance(conn, row.id, decision.due, moved):
                return None
            # what the cron holds now that its row is ours (an edit may have changed it)
            cron = await self.crons.reread(conn, row.id)
            if cron is None:
                return None
            # a value given to what became a password of the plan since is stored sealed
            if await seal_plan_passwords(conn, cron.plan_id, self.cipher, cron.id):
                cron = await self.crons.reread(conn, row.id) or cron
            scope = await self._scope(cron)
            operator = cron.operator or cron.last_modify_user or cron.creator
            # the cron acts for a user through an app: once either lost the scope (or
            # the app is gone or disabled) it no longer fires
            refused = await refusal(
                self.identity,
                operator,
                cron.app_code,
                cron.scope_type,
                cron.scope_id,
                scope.biz_ids,
            )
            if refused is not None:
                raise JobError(ErrorCode.PERMISSION_DENIED, refused)
            overrides = [
                {k: v for k, v in entry.items() if k != "type"}
                for entry in open_values(cron.variables, self.cipher)
            ]
            if decision.skipped is not None:
                await self.crons.record(
                    conn,
                    row.id,
                    decision.skipped,
                    SKIPPED,
                    node=self.settings.node_id,
                    message=decision.reason,
                )
            job_id, _name = await self.plans.launch(
                plan_id=cron.plan_id,
                scope=scope,
                overrides=overrides,
                launch_mode=int(LaunchMode.CRON),
                operator=operator,
                app_code=cron.app_code,
                cron_id=cron.id,
                start=True,
                conn=conn,
            )
            await self.crons.record(
                conn,
                row.id,
                decision.fire,
                FIRED,
                node=self.settings.node_id,
                job_instance_id=job_id,
            )
        return job_id

    async def _settle(
        self,
        cron_id: int,
        decision: Decision,
        moved: dict[str, Any],
        failure: str | None,
        *,
        record: bool = True,
    ) -> None:
        """Move the schedule on without a job: slots skipped, or a launch that failed."""
        async with self.crons.db.begin() as conn:
            if not await self.crons.advance(conn, cron_id, decision.due, moved):
                return
            if not record:
                return
            node = self.settings.node_id
            if decision.skipped is not None:
                await self.crons.record(
                    conn, cron_id, decision.skipped, SKIPPED, node=node, message=decision.reason
                )
            if decision.fire is not None and failure is not None:
                await self.crons.record(
                    conn, cron_id, decision.fire, FAILED, node=node, message=failure
                )

    async def _scope(self, cron: Row[Any]) -> Scope:
        try:
            number = int(cron.scope_id)
        except ValueError:
            raise JobError.invalid("bk_scope_id") from None
        if cron.scope_type == ScopeType.BIZ:
            biz_ids = {number}
        elif cron.scope_type == ScopeType.BIZ_SET:
            members = await self.identity.biz_set_members(number)
            if members is None:
                raise JobError(ErrorCode.SCOPE_NOT_EXIST, f"Business set {number} does not exist")
            biz_ids = set(members)
        else:
            biz_ids = await self.identity.business_ids()
        return Scope(cron.scope_type, cron.scope_id, cron.bk_biz_id, biz_ids)
