"""Dangerous-statement rules: the table, and the enabled rules every script is checked against.

Scripts are checked on every ``fast_execute_script`` and every plan launch, so the
enabled rules are kept compiled in memory for ``ttl`` seconds: under load a node reads
the table at most once per ``ttl``. A change made through this store drops the copy at
once, so it holds on this node from the next request; other nodes see it within ``ttl``.

A check is bounded in time (``ScanLimits``, domain/dangerous.py). It starts on the event
loop; when a search there takes more than a few milliseconds, or the script is large,
the check runs on the store's own threads instead, whose searches release the
interpreter lock: a rule backtracking on a crafted line neither stalls other requests
nor takes the threads other work is offloaded to. At most ``MAX_THREAD_CHECKS`` checks
run or wait for those threads; past that a launch is answered busy (1249429, HTTP 429).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Row, delete, insert, select, update

from jobfleet.domain.dangerous import (
    Finding,
    NeedsThread,
    Rule,
    RuleStatus,
    ScanLimits,
    applicable,
    blocking,
    compile_rule,
    refusal,
    scan,
)
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.scripts import ScriptText, rule_texts
from jobfleet.store.database import Database, change_stamps, new_stamps, now_ms
from jobfleet.store.tables import dangerous_rules

log = logging.getLogger(__name__)

DEFAULT_TTL = 3.0
# scanning a large script takes a while: do it off the event loop
OFFLOAD_CHARS = 256 * 1024
# the longest a check runs on the event loop before it moves to a thread
INLINE_SECONDS = 0.02
# checks at once off the event loop (more wait their turn)
CHECK_THREADS = 2
# checks off the event loop at once, running or waiting for a thread: past this a
# launch is answered busy (1249429) at once rather than queued without end
MAX_THREAD_CHECKS = CHECK_THREADS * 4


def rule_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "expression": row.expression,
        "script_language_list": sorted(int(x) for x in row.script_language_list or []),
        "description": row.description,
        "action": row.action,
        "status": row.status,
        **change_stamps(row),
    }


class RuleStore:
    def __init__(
        self,
        db: Database,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
        limits: ScanLimits | None = None,
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.clock = clock
        self.limits = limits or ScanLimits()
        self._threads: ThreadPoolExecutor | None = None
        self._thread_slots = asyncio.Semaphore(MAX_THREAD_CHECKS)
        self._rules: tuple[Rule, ...] | None = None
        self._loaded_at = 0.0
        # bumped by every change: a load that raced a change must not be kept
        self._generation = 0
        self._loading = asyncio.Lock()

    # reads -------------------------------------------------------------------
    async def search(
        self,
        *,
        expression: str | None = None,
        description: str | None = None,
        languages: Iterable[int] | None = None,
        action: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rules in id order. Text filters match any part, ignoring case; languages any of."""
        cond = []
        if action is not None:
            cond.append(dangerous_rules.c.action == action)
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(dangerous_rules).where(*cond).order_by(dangerous_rules.c.id)
            )
            views = [rule_view(r) for r in rows]
        # the table holds tens of rules: filtering here keeps SQLite and PostgreSQL alike
        wanted = set(languages or ())
        return [
            v
            for v in views
            if _contains(v["expression"], expression)
            and _contains(v["description"], description)
            and (not wanted or wanted & set(v["script_language_list"]))
        ]

    async def get(self, rule_id: int) -> dict[str, Any]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(dangerous_rules).where(dangerous_rules.c.id == rule_id))
            ).first()
        if row is None:
            raise JobError(ErrorCode.NOT_FOUND, f"Dangerous rule {rule_id} does not exist")
        return rule_view(row)

    # changes -----------------------------------------------------------------
    async def create(
        self,
        *,
        expression: str,
        languages: list[int],
        action: int,
        description: str,
        user: str,
        status: int = RuleStatus.DISABLED,
    ) -> dict[str, Any]:
        now = now_ms()
        async with self.db.begin() as conn:
            res = await conn.execute(
                insert(dangerous_rules).values(
                    expression=expression,
                    script_language_list=languages,
                    description=description,
                    action=int(action),
                    status=int(status),
                    **new_stamps(user, now),
                )
            )
        self.invalidate()
        return await self.get(int(res.inserted_primary_key[0]))  # type: ignore[index]

    async def update(
        self,
        rule_id: int,
        *,
        user: str,
        expression: str | None = None,
        languages: list[int] | None = None,
        action: int | None = None,
        description: str | None = None,
        status: int | None = None,
    ) -> dict[str, Any]:
        values: dict[str, Any] = {"last_modify_user": user, "last_modify_time": now_ms()}
        for column, value in (
            ("expression", expression),
            ("script_language_list", languages),
            ("action", action),
            ("description", description),
            ("status", status),
        ):
            if value is not None:
                values[column] = value
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(dangerous_rules).where(dangerous_rules.c.id == rule_id).values(**values)
            )
        if not res.rowcount:
            raise JobError(ErrorCode.NOT_FOUND, f"Dangerous rule {rule_id} does not exist")
        self.invalidate()
        return await self.get(rule_id)

    async def delete(self, rule_id: int) -> dict[str, Any]:
        """Delete a rule; returns it as it was."""
        view = await self.get(rule_id)
        async with self.db.begin() as conn:
            res = await conn.execute(delete(dangerous_rules).where(dangerous_rules.c.id == rule_id))
        if not res.rowcount:
            raise JobError(ErrorCode.NOT_FOUND, f"Dangerous rule {rule_id} does not exist")
        self.invalidate()
        return view

    # checking scripts --------------------------------------------------------
    def invalidate(self) -> None:
        self._generation += 1
        self._rules = None

    async def enabled(self) -> tuple[Rule, ...]:
        """The enabled rules, compiled; read from the table at most once per ``ttl``."""
        rules = self._cached()
        if rules is not None:
            return rules
        # one reader at a time: a burst of requests after expiry costs one query
        async with self._loading:
            rules = self._cached()
            if rules is not None:
                return rules
            generation = self._generation
            rules = await self._load()
            if generation == self._generation:
                self._rules, self._loaded_at = rules, self.clock()
            return rules

    def _cached(self) -> tuple[Rule, ...] | None:
        if self._rules is not None and self.clock() - self._loaded_at < self.ttl:
            return self._rules
        return None

    async def _load(self) -> tuple[Rule, ...]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(dangerous_rules)
                .where(dangerous_rules.c.status == int(RuleStatus.ENABLED))
                .order_by(dangerous_rules.c.id)
            )
            found = list(rows)
        rules = []
        for row in found:
            try:
                rules.append(
                    compile_rule(
                        row.id,
                        row.expression,
                        row.script_language_list or [],
                        row.action,
                        row.description,
                    )
                )
            except (JobError, ValueError, TypeError):
                # written around the API: one bad row must not stop every execution
                log.error("dangerous_rule_unusable id=%s", row.id)
        return tuple(rules)

    async def check(self, script: str | ScriptText, language: int) -> list[Finding]:
        """The findings of the enabled rules on ``script`` (as sent: see
        ``domain.scripts``); a rule out of time is logged and reported.

        Rules match the script's text view, whoever asks (a launch, a plan, the check
        of the API and the console): a UTF-16 script with its byte order mark is read
        as the text it is, and an ASCII command is seen whatever bytes surround it.
        Where the host may read the bytes otherwise (``rule_texts``), each reading is
        matched, and a finding of the second adds to those of the first."""
        rules = applicable(await self.enabled(), language)
        if not rules:
            return []
        first, *others = rule_texts(script)
        findings = await self._check_text(first, language, rules)
        for text in others:
            seen = {(f.line, f.rule.id) for f in findings}
            more = [
                f
                for f in await self._check_text(text, language, rules)
                if (f.line, f.rule.id) not in seen
            ]
            if more:
                findings = sorted([*findings, *more], key=lambda f: f.line)
        return findings

    async def _check_text(self, text: str, language: int, rules: list[Rule]) -> list[Finding]:
        """The findings of ``rules`` on one reading of a script."""
        findings = None
        if len(text) <= OFFLOAD_CHARS:
            with contextlib.suppress(NeedsThread):
                findings = scan(text, language, rules, self.limits, inline=INLINE_SECONDS)
        if findings is None:
            findings = await self._check_on_thread(text, language, rules)
        for finding in findings:
            if finding.timed_out:
                log.warning(
                    "dangerous_rule_timeout rule=%s action=%s line=%s chars=%d",
                    finding.rule.id,
                    finding.rule.action.name,
                    finding.line,
                    len(text),
                )
        return findings

    async def _check_on_thread(
        self, text: str, language: int, rules: list[Rule]
    ) -> list[Finding]:
        """``scan`` on the store's threads; busy (1249429) when ``MAX_THREAD_CHECKS``
        checks already run or wait there."""
        if self._thread_slots.locked():
            log.warning("dangerous_check_busy waiting=%d chars=%d", MAX_THREAD_CHECKS, len(text))
            raise JobError(
                ErrorCode.TOO_MANY_REQUESTS,
                f"The dangerous-statement check is busy: {MAX_THREAD_CHECKS} long checks are"
                " under way or waiting; try again in a few seconds",
                http_status=429,
            )
        async with self._thread_slots:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(CHECK_THREADS, "dangerous-rules")
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, functools.partial(scan, text, language, rules, self.limits)
            )

    async def enforce(
        self, script: str | ScriptText, language: int, *, where: str = ""
    ) -> list[Finding]:
        """Refuse (1244019) a script an intercept rule matches; log what scan rules find."""
        findings = await self.check(script, language)
        hit = blocking(findings)
        if hit is not None:
            log.warning(
                "dangerous_script_blocked rule=%s line=%s where=%r timed_out=%s",
                hit.rule.id,
                hit.line,
                where,
                hit.timed_out,
            )
            raise refusal(hit, where)
        if findings:
            # one line per script: a rule may match thousands of lines
            log.warning(
                "dangerous_script_warning where=%r findings=%d rules=%s first_line=%d",
                where,
                len(findings),
                sorted({f.rule.id for f in findings}),
                findings[0].line,
            )
        return findings


def _contains(text: str, part: str | None) -> bool:
    return not part or part.casefold() in text.casefold()
