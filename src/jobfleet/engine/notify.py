"""Job-end notifications: what a webhook or a mail says, and how each is sent.

``outbox_rows`` builds one outbox row per enabled config of the job's business
that listens for its final status; the engine writes them in the transaction
that sets that status, and the outbox sender (engine/callbacks.py) delivers
them with retries. A webhook body is signed when the row is built, so the HMAC
key is read only here and never stored outside its config.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import smtplib
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Row

from jobfleet import __version__
from jobfleet.domain.status import HostStatus, LaunchMode, RunStatus, StepType
from jobfleet.engine.outbound import Outbound
from jobfleet.store.jobs import JobStore
from jobfleet.store.notify import EMAIL, WEBHOOK, NotifyStore, NotifyTarget, shown_url
from jobfleet.store.secrets import Cipher

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

EVENT = "job_finished"
SIGNATURE_HEADER = "X-Jobfleet-Signature"
DELIVERY_HEADER = "X-Jobfleet-Delivery"
EVENT_HEADER = "X-Jobfleet-Event"

OUTCOME = {
    RunStatus.SUCCESS: "succeeded",
    RunStatus.FAIL: "failed",
    RunStatus.SKIPPED: "was skipped",
    RunStatus.IGNORE_ERROR: "finished with ignored errors",
    RunStatus.TERMINATED: "was terminated",
    RunStatus.ABNORMAL_STATE: "ended in an abnormal state",
    RunStatus.STOP_SUCCESS: "was stopped",
    RunStatus.CONFIRM_TERMINATED: "was ended at a confirmation",
    RunStatus.ABANDONED: "was abandoned",
}
LAUNCHED_BY = {LaunchMode.WEB: "the console", LaunchMode.API: "the API", LaunchMode.CRON: "cron"}
STEP_KIND = {
    StepType.SCRIPT: "script",
    StepType.FILE: "file",
    StepType.MANUAL_CONFIRM: "confirmation",
    StepType.SQL: "sql",
}

# smtplib blocks, so mails are sent from threads of their own: the outbox sends many
# deliveries at once, and a mail server that is slow or never answers would otherwise
# hold every thread of the loop's default executor (password checks, file writes, DNS).
# One for each delivery the outbox has in flight (``callbacks.IN_FLIGHT``): a mail that
# waited for a thread could outlast its row's claim and be sent twice.
MAIL_THREADS = 32
_mail_threads = ThreadPoolExecutor(MAIL_THREADS, thread_name_prefix="jobfleet-mail")


@dataclass
class SmtpSettings:
    """The mail server notifications go through (a server setting)."""

    host: str
    port: int = 25
    sender: str = "jobfleet@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _status_name(status: int) -> str:
    try:
        return RunStatus(status).name
    except ValueError:
        return str(status)


def _one_line(text: str) -> str:
    # names end up in mail headers: no line breaks may reach them
    return " ".join(text.split())


def _seconds(ms: int | None) -> str:
    return "?" if ms is None else f"{ms / 1000:.1f}s"


async def job_event(
    store: JobStore, job: Row[Any], status: RunStatus, steps: Sequence[Row[Any]], end: int
) -> dict[str, Any]:
    """The facts of a finished job, as a webhook body (and the source of a mail)."""
    started = job.start_time or job.create_time
    step_views = []
    for step in steps:
        counts = await store.status_counts(step.id, step.execute_count)
        total = sum(counts.values())
        ok = sum(n for s, n in counts.items() if s in (HostStatus.SUCCESS, HostStatus.LAST_SUCCESS))
        pending = sum(n for s, n in counts.items() if s in (HostStatus.WAITING, HostStatus.RUNNING))
        step_views.append(
            {
                "step_instance_id": step.id,
                "name": step.name,
                "type": step.type,
                "status": step.status,
                "status_name": _status_name(step.status),
                "execute_count": step.execute_count,
                "total_time": step.total_time,
                "hosts": {"total": total, "success": ok, "failed": total - ok - pending},
            }
        )
    event: dict[str, Any] = {
        "event": EVENT,
        "job_instance_id": job.id,
        "name": job.name,
        "status": int(status),
        "status_name": status.name,
        "bk_biz_id": job.bk_biz_id,
        "bk_scope_type": job.scope_type,
        "bk_scope_id": job.scope_id,
        "operator": job.operator,
        "app_code": job.app_code,
        "launch_mode": job.launch_mode,
        "type": job.type,
        "create_time": job.create_time,
        "start_time": job.start_time,
        "end_time": end,
        "total_time": end - started,
        "steps": step_views,
    }
    event["summary"] = summary(event)
    return event


def summary(event: dict[str, Any]) -> str:
    """Plain text for people: no links, no markup."""
    status = RunStatus(event["status"])
    try:
        how = LAUNCHED_BY[LaunchMode(event["launch_mode"])]
    except (KeyError, ValueError):
        how = f"launch mode {event['launch_mode']}"
    lines = [
        f"Job {_one_line(event['name'])!r} (#{event['job_instance_id']}) in "
        f"{event['bk_scope_type']} {event['bk_scope_id']} "
        f"{OUTCOME.get(status, status.name)} after {_seconds(event['total_time'])}.",
        f"Started by {event['operator']} through {how} (app {event['app_code']}).",
    ]
    for number, step in enumerate(event["steps"], start=1):
        try:
            kind = STEP_KIND[StepType(step["type"])]
        except (KeyError, ValueError):
            kind = f"type {step['type']}"
        hosts = step["hosts"]
        on = f", {hosts['success']} of {hosts['total']} hosts succeeded" if hosts["total"] else ""
        lines.append(
            f"Step {number} {_one_line(step['name'])!r} ({kind}): {step['status_name']}{on}."
        )
    return "\n".join(lines)


def webhook_payload(
    body: bytes, secret: str | None, event: str = EVENT, sealed_url: str | None = None
) -> str:
    """What the outbox keeps for a webhook: the exact bytes to send, their signature, the
    event's name (its header) and the URL encrypted (the row's target shows it masked:
    a webhook's URL may hold its token)."""
    stored = {"body": body.decode(), "signature": sign(secret, body) if secret else None}
    return orjson.dumps({**stored, "event": event, "url": sealed_url}).decode()


def webhook_url(target: str, payload: str, cipher: Cipher) -> str:
    """Where an outbox row's webhook goes: its sealed URL, else (a row queued before URLs
    were sealed) its target."""
    sealed = orjson.loads(payload).get("url")
    return cipher.decrypt(sealed) if isinstance(sealed, str) and sealed else target


def email_payload(to: list[str], event: dict[str, Any]) -> str:
    head = f"[jobfleet] Job {_one_line(event['name'])} (#{event['job_instance_id']})"
    if event.get("event", EVENT) == EVENT:
        status = RunStatus(event["status"])
        subject = f"{head} {OUTCOME.get(status, status.name)}"
    else:
        subject = f"{head} waits for your confirmation at {_one_line(event['step_name'])}"
    return orjson.dumps({"to": to, "subject": subject[:900], "text": event["summary"]}).decode()


def row_for(
    config: NotifyTarget, event: dict[str, Any], body: bytes, cipher: Cipher, *, name: str = EVENT
) -> dict[str, Any] | None:
    if config.channel == WEBHOOK and isinstance(config.target, str):
        return {
            "kind": WEBHOOK,
            "target": shown_url(config.target),
            "payload": webhook_payload(body, config.secret, name, cipher.encrypt(config.target)),
        }
    if config.channel == EMAIL and isinstance(config.target, list) and config.target:
        to = [str(a) for a in config.target]
        return {"kind": EMAIL, "target": ", ".join(to)[:1024], "payload": email_payload(to, event)}
    log.warning("notify_config_unusable id=%s channel=%s", config.id, config.channel)
    return None


async def outbox_rows(
    store: JobStore,
    cipher: Cipher,
    job_id: int,
    status: RunStatus,
    steps: Sequence[Row[Any]],
    end: int,
    max_attempts: int,
) -> list[dict[str, Any]]:
    """The notifications a job's end sends; none rather than a job that cannot finish."""
    try:
        job = await store.job(job_id)
        if job is None:
            return []
        configs = await NotifyStore(store.db, cipher).matching(job.bk_biz_id, int(status))
        if not configs:
            return []
        event = await job_event(store, job, status, steps, end)
        body = orjson.dumps(event)
        rows = []
        for config in configs:
            row = row_for(config, event, body, cipher)
            if row is not None:
                rows.append({**row, "job_instance_id": job_id, "max_attempts": max_attempts})
        return rows
    except Exception:
        log.exception("notify_build_failed job=%s", job_id)
        return []


# delivery ---------------------------------------------------------------------------


async def post_webhook(
    client: httpx.AsyncClient, row_id: int, url: str, payload: str, outbound: Outbound
) -> tuple[bool, str]:
    import httpx  # on first use: ~5 MiB with rich and pygments, see outbound.checked

    stored = orjson.loads(payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"jobfleet/{__version__}",
        EVENT_HEADER: str(stored.get("event") or EVENT),
        DELIVERY_HEADER: str(row_id),
    }
    if stored.get("signature"):
        headers[SIGNATURE_HEADER] = stored["signature"]
    try:
        resp = await outbound.post(client, url, content=stored["body"].encode(), headers=headers)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if 200 <= resp.status_code < 300:
        return True, ""
    return False, f"HTTP {resp.status_code}"


def mail_message(smtp: SmtpSettings, row_id: int, create_time: int, payload: str) -> EmailMessage:
    stored = orjson.loads(payload)
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(stored["to"])
    msg["Subject"] = stored["subject"]
    msg["Date"] = formatdate(create_time / 1000, localtime=False)
    domain = smtp.sender.rpartition("@")[2] or "localhost"
    # the same id on every attempt, so a mail server can drop a repeat
    msg["Message-ID"] = f"<jobfleet.{row_id}.{create_time}@{domain}>"
    msg[DELIVERY_HEADER] = str(row_id)
    msg.set_content(stored["text"] + "\n")
    return msg


def _send_mail(smtp: SmtpSettings, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.username:
            client.login(smtp.username, smtp.password or "")
        return client.send_message(msg)


async def send_email(
    smtp: SmtpSettings, row_id: int, create_time: int, payload: str
) -> tuple[bool, str]:
    msg = mail_message(smtp, row_id, create_time, payload)
    try:
        refused = await asyncio.get_running_loop().run_in_executor(
            _mail_threads, _send_mail, smtp, msg
        )
    except (smtplib.SMTPException, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if refused:
        # resending would repeat the mail to those who got it
        log.warning("notify_mail_partly_refused id=%s refused=%d", row_id, len(refused))
    return True, ""
