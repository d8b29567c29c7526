"""Delivers the outbox: job callbacks, notification webhooks and mails, retrying with
backoff until one is accepted (a 2xx, or the mail server taking the mail).

Rows are written in the same transaction as a job's final status, so a delivery
survives a restart; a row is claimed by pushing its next attempt into the future
with a conditional update, so two nodes never send the same attempt, and a row
is done once accepted, so nothing accepted is sent again. Attempts run side by side,
at most ``callback_per_receiver`` of them to one receiver, so a receiver that is slow or
never answers delays only its own deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import Row

from jobfleet.engine import notify
from jobfleet.engine.outbound import Outbound, Refused
from jobfleet.engine.settings import EngineSettings
from jobfleet.loop import raise_if_cancelled
from jobfleet.store.database import Database, now_ms
from jobfleet.store.notify import EMAIL, WEBHOOK
from jobfleet.store.outage import OutageLog
from jobfleet.store.outbox import OutboxStore
from jobfleet.store.secrets import Cipher

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

CLAIM_SECONDS = 120.0
# deliveries one node has in flight at once: a receiver that is slow or never answers
# holds at most ``callback_per_receiver`` of them for up to its timeouts, so the others'
# deliveries go out meanwhile
IN_FLIGHT = 32
# due rows read at once, and reads in one pass: rows of receivers that have all their
# slots are put off, so a pass reaches the rows behind them
READ = 50
READS = 20
# how long a due row whose receiver has all its slots is put off (no attempt counted)
HOLD_SECONDS = 2.0
# as bk-job: a receiver that answers the JSON post with anything but success gets the
# same body at once again, declared a form post (some receivers read only those)
CALLBACK_CONTENT_TYPES = (
    ("application/json", "JSON"),
    ("application/x-www-form-urlencoded", "form"),
)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def _raised_at(exc: BaseException) -> str:
    """The module and line an exception was raised at (its message left out)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno}"


class CallbackSender:
    def __init__(
        self,
        db: Database,
        settings: EngineSettings,
        smtp: notify.SmtpSettings | None = None,
        outbound: Outbound | None = None,
        *,
        cipher: Cipher,
    ) -> None:
        self.db = db
        # opens the callbacks' and webhooks' URLs, which the outbox keeps encrypted
        self.cipher = cipher
        self.outbox = OutboxStore(db)
        self.settings = settings
        self.smtp = smtp
        # no guard given: nothing but the default refusals (loopback, link-local, …)
        self.outbound = outbound or Outbound()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # the receiver each attempt in flight goes to, and how many each has
        self._receiver_of: dict[asyncio.Task[None], str] = {}
        self._busy: Counter[str] = Counter()
        # figures for /metrics, by outbox kind: attempts that failed, rows given up on
        self.failed_attempts: Counter[str] = Counter()
        self.gave_up: Counter[str] = Counter()
        # the attempts in flight when the database goes away fail together
        self._attempt_outage = OutageLog(log, "outbox_attempt_failed")

    def wake(self, *_args: object) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # an attempt cut short stays claimed: its row is tried again once the claim ends
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        if self._client:
            await self._client.aclose()

    async def _run(self) -> None:
        outage = OutageLog(log, "outbox_loop_failed")
        while True:
            raise_if_cancelled()
            try:
                sent = await self.deliver_due()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception:
                outage.failed()
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                self._wake.clear()

    async def deliver_due(self) -> int:
        """Claim due rows and start their attempts; the number started. A row whose
        receiver has all the attempts it may have in flight is put off a little, so
        that the rows behind it are read."""
        sent = 0
        now = time.time()
        for _ in range(READS):
            room = min(READ, IN_FLIGHT - len(self._sending))
            if room <= 0:
                break
            rows = await self.outbox.due(now, room)
            held = []
            for row in rows:
                receiver = self._receiver(row)
                if self._busy[receiver] >= self.settings.callback_per_receiver:
                    held.append(row.id)
                elif await self.outbox.claim(row, now + CLAIM_SECONDS, self.settings.node_id):
                    sent += 1
                    self._start(row, receiver)
            if not held:
                break
            await self.outbox.hold(held, now, now + HOLD_SECONDS)
        return sent

    def _receiver(self, row: Row[Any]) -> str:
        """Where a row goes, as ``scheme://host:port`` (the mail server for a mail); a
        row of its own when that cannot be read (its attempt will say why)."""
        try:
            if row.kind == "callback":
                return _origin(self.cipher.decrypt(row.target))
            if row.kind == WEBHOOK:
                return _origin(notify.webhook_url(row.target, row.payload, self.cipher))
            if row.kind == EMAIL and self.smtp is not None:
                return f"smtp://{self.smtp.host}:{self.smtp.port}"
        except Exception:
            return f"row:{row.id}"
        return f"row:{row.id}"

    def _start(self, row: Row[Any], receiver: str) -> None:
        task = asyncio.get_running_loop().create_task(self._attempt_logged(row))
        self._sending.add(task)
        self._receiver_of[task] = receiver
        self._busy[receiver] += 1
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        receiver = self._receiver_of.pop(task, None)
        if receiver is not None:
            self._busy[receiver] -= 1
            if self._busy[receiver] <= 0:
                del self._busy[receiver]
        # room for the next due rows
        self._wake.set()

    async def _attempt_logged(self, row: Row[Any]) -> None:
        try:
            await self._attempt(row)
            self._attempt_outage.ok()
        except asyncio.CancelledError:
            raise
        except Exception:
            # the outcome could not be recorded (the database failed): the row stays
            # claimed and is tried again once the claim ends
            self._attempt_outage.failed("kind=%s id=%s", row.kind, row.id)

    async def _send(self, row: Row[Any]) -> tuple[bool, str, bool]:
        """``(accepted, error, final)``: a final failure is not retried."""
        try:
            return await self._post(row)
        except Refused as exc:
            log.warning("outbox_refused kind=%s id=%s reason=%s", row.kind, row.id, exc.reason)
            return False, f"refused: {exc.reason}", True
        except Exception as exc:
            # a row the sender cannot handle (sealed with another key, a payload it cannot
            # read) fails like any attempt, so it ends after its attempts rather than being
            # claimed again for ever. Its message may quote the row (a URL, a token): only
            # the exception's type and where it was raised are kept
            kind, where = type(exc).__name__, _raised_at(exc)
            log.error(
                "outbox_attempt_raised kind=%s id=%s error=%s at=%s", row.kind, row.id, kind, where
            )
            return False, f"internal error: {kind} at {where}", False

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # made when first needed: its TLS context reads the CA bundle, tens of ms of
            # every start of a node that may never send a callback, and httpx (rich and
            # pygments come with it) is ~5 MiB that such a node never loads
            import httpx

            self._client = httpx.AsyncClient(
                timeout=self.settings.callback_timeout, follow_redirects=False, trust_env=False
            )
        return self._client

    async def _post(self, row: Row[Any]) -> tuple[bool, str, bool]:
        client = self._http()
        import httpx  # loaded by ``_http``
        if row.kind == "callback":
            # sealed when the job was made (a row queued before is in clear)
            url = self.cipher.decrypt(row.target)
            answers: list[str] = []
            try:
                for content_type, kind in CALLBACK_CONTENT_TYPES:
                    resp = await self.outbound.post(
                        client,
                        url,
                        content=row.payload.encode(),
                        headers={"Content-Type": content_type},
                    )
                    if 200 <= resp.status_code < 300:
                        return True, "", False
                    answers.append(f"HTTP {resp.status_code} ({kind})")
            except httpx.HTTPError as exc:
                return False, f"{type(exc).__name__}: {exc}", False
            return False, ", ".join(answers), False
        if row.kind == WEBHOOK:
            return (
                *await notify.post_webhook(
                    client,
                    row.id,
                    notify.webhook_url(row.target, row.payload, self.cipher),
                    row.payload,
                    self.outbound,
                ),
                False,
            )
        if row.kind == EMAIL:
            if self.smtp is None:
                return False, "no mail server is configured (jobfleet server --smtp-host)", True
            return (
                *await notify.send_email(self.smtp, row.id, row.create_time, row.payload),
                False,
            )
        return False, f"unknown outbox kind {row.kind!r}", True

    async def _attempt(self, row: Row[Any]) -> None:
        ok, error, final = await self._send(row)
        error = error[:1000]
        attempts = row.attempts + 1
        values: dict[str, object] = {"attempts": attempts, "last_error": error}
        if not ok:
            self.failed_attempts[row.kind] += 1
        if ok:
            values.update(state="done", done_time=now_ms())
        elif final or attempts >= row.max_attempts:
            values.update(state="failed", done_time=now_ms())
            self.gave_up[row.kind] += 1
            log.warning(
                "outbox_gave_up kind=%s id=%s attempts=%d error=%s",
                row.kind,
                row.id,
                attempts,
                error,
            )
        else:
            delay = min(
                self.settings.callback_backoff_max,
                self.settings.callback_backoff * 2 ** (attempts - 1),
            )
            values["next_attempt_at"] = time.time() + delay
            log.info(
                "outbox_retry kind=%s id=%s attempts=%d in=%.1fs error=%s",
                row.kind,
                row.id,
                attempts,
                delay,
                error,
            )
        await self.outbox.record(row.id, values)
