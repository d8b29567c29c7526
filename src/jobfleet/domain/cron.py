"""Cron schedules: bk-job's 5-field expressions, time zones, and which slot fires when.

A *slot* is the epoch second (on the cron clock, see ``CronClock``) at which a
schedule is due. Expressions are evaluated in the cron's IANA time zone with
Debian cron's rules for daylight saving time (through ``cronsim``): a job at a
fixed local time that falls into the hour skipped in spring runs when that hour
ends, and one that falls into the hour repeated in autumn runs once; schedules
with ``*`` in the minute or hour field follow the real clock.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from jobfleet.domain.errors import ErrorCode, JobError

MAX_NAME = 60
# what a cron row keeps of an expression
MAX_EXPRESSION = 255
DEFAULT_TIMEZONE = "UTC"
# execute_time above this is surely milliseconds (it is the year 5138 in seconds)
MAX_EXECUTE_TIME = 100_000_000_000
# how many slots of one schedule a single decision walks through at most
MAX_WALK = 100_000
MAX_SCALE = 1000
# slots at or before the moment asked about that a schedule may give (see next_slot)
MAX_EARLIER = 100

FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("week", 0, 7),
)
# Vixie cron's names for common schedules, which bk-job does not read
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
QUARTZ_RE = re.compile(r"^\d*(L|W|LW)$")
ITEM_RE = re.compile(r"^(?P<base>\*|[A-Z0-9]+(?:-[A-Z0-9]+)?)(?:/(?P<step>[^/]*))?$")


def _bad(reason: str, field: str = "expression") -> JobError:
    return JobError(ErrorCode.INVALID_PARAM_WITH_REASON, f"Invalid parameter [{field}]: {reason}")


def _value(text: str, field: int) -> int:
    name, low, high = FIELDS[field]
    if field == 3 and text in MONTH_NAMES:
        return MONTH_NAMES.index(text) + 1
    if field == 4 and text in DAY_NAMES:
        return DAY_NAMES.index(text)
    if not text.isdecimal():
        if QUARTZ_RE.match(text):
            raise _bad(f"Quartz's {text!r} is not supported (in the {name} field)")
        raise _bad(f"{text!r} is not a number in the {name} field")
    if len(text.lstrip("0")) > 9:  # past every field's range (and read at once)
        raise _bad(f"{name} {text[:12]}... is out of range {low}-{high}")
    number = int(text)
    if not low <= number <= high:
        raise _bad(f"{name} {number} is out of range {low}-{high}")
    return number


def _check_field(text: str, field: int) -> None:
    name, low, high = FIELDS[field]
    for item in text.split(","):
        if item == "":
            raise _bad(f"the {name} field {text!r} has an empty list item")
        match = ITEM_RE.match(item)
        if match is None:
            raise _bad(f"{item!r} in the {name} field is not a value, range, list or step")
        base, step = match.group("base"), match.group("step")
        if base != "*":
            first, _, last = base.partition("-")
            start = _value(first, field)
            if last:
                end = _value(last, field)
                if end < start:
                    raise _bad(f"the {name} range {base} runs backwards")
        if step is not None:
            digits = step.lstrip("0")
            if not step.isdecimal() or not digits:
                raise _bad(f"the step in {item!r} ({name} field) must be a positive number")
            if len(digits) > 9 or int(digits) > high - low + 1:
                raise _bad(f"the step in {item!r} is larger than the {name} range {low}-{high}")


def parse_expression(text: object) -> str:
    """A validated expression, fields separated by single spaces and names upper-cased.

    bk-job's form: ``minute hour day month week`` with ``*``, numbers, ``a-b``,
    lists ``a,b``, steps ``*/n``, ``a/n`` (from a to the end, e.g. ``0/5``) and
    ``a-b/n``; months JAN-DEC and days SUN-SAT by name; day of week 0-7 (0 and 7
    are Sunday). Quartz's ``?``, ``L``, ``W`` and ``#`` are not supported.
    """
    if text is None or text == "":
        raise JobError.missing("expression")
    if not isinstance(text, str):
        raise _bad("must be a string like '0/5 * * * *'")
    parts = text.upper().split()
    if parts and parts[0].startswith("@"):
        name = text.split()[0][:20]
        spelled = MACROS.get(name.lower())
        hint = f" ({spelled!r} for {name})" if spelled else ""
        raise _bad(f"{name!r} is not supported: a cron expression has 5 fields{hint}")
    if len(parts) != 5:
        hint = " (seconds and years are not supported)" if len(parts) in (6, 7) else ""
        raise _bad(
            f"{text.strip()!r} has {len(parts)} fields; a cron expression has 5: "
            f"minute hour day month week{hint}"
        )
    for field, part in enumerate(parts):
        name = FIELDS[field][0]
        if "?" in part:
            raise _bad(f"'?' is not supported (in the {name} field); use '*'")
        if "#" in part:
            raise _bad(f"'#' is not supported (in the {name} field)")
        _check_field(part, field)
    normalized = " ".join(parts)
    if len(normalized) > MAX_EXPRESSION:
        raise _bad(f"a cron expression is at most {MAX_EXPRESSION} characters")
    try:
        schedule = CronSim(normalized, datetime(2000, 1, 1, tzinfo=UTC))
        next(schedule)
    except CronSimError:
        raise _bad(f"{normalized!r} names a day that no month has") from None
    except StopIteration:
        raise _bad(f"{normalized!r} never fires") from None
    return normalized


def check_timezone(name: object, field: str = "execute_time_zone") -> str:
    if not isinstance(name, str) or not name.strip():
        raise JobError.missing(field)
    key = name.strip()
    try:
        ZoneInfo(key)
        if key not in _zone_names():
            raise ValueError(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad(f"{key!r} is not an IANA time zone (e.g. Asia/Shanghai, UTC)", field) from None
    return key


@functools.cache
def _zone_names() -> frozenset[str]:
    """IANA's zone names; not every file of the zone directory is one: ``localtime`` is
    the machine's own zone (servers of one database could disagree on it), and
    ``posixrules``, ``posix/…`` and ``right/…`` are copies for other uses."""
    return frozenset(available_timezones() - {"localtime"})


def next_slot(expression: str, timezone: str, after: int) -> int | None:
    """The first slot strictly after ``after`` (epoch s), or None if it never fires again."""
    try:
        start = datetime.fromtimestamp(after, ZoneInfo(timezone))
        schedule = CronSim(expression, start)
        # from a moment of the hour repeated in autumn cronsim gives a fixed time's
        # first (summer) occurrence that day, which came before it: the next one is due
        for _ in range(MAX_EARLIER):
            slot = int(next(schedule).timestamp())
            if slot > after:
                return slot
        return None
    except (StopIteration, CronSimError, OverflowError, ValueError):
        return None


@dataclass(frozen=True)
class CronClock:
    """The clock schedules run on: ``scale`` times faster than the wall clock.

    cron time = ANCHOR + (wall time - ANCHOR) * scale, in epoch seconds. At scale 1
    the two are the same; at scale 60 a cron minute lasts one second. The anchor
    (2023-11-14) keeps scaled dates within what ``datetime`` holds (year 9999): at
    scale 60 for a century, at the largest scale, 1000, until 2031. Every node on a
    database must run the same scale.
    """

    scale: float = 1.0

    ANCHOR = 1_700_000_000

    def __post_init__(self) -> None:
        if not 1.0 <= self.scale <= MAX_SCALE:
            raise ValueError(f"cron time scale must be between 1 and {MAX_SCALE}, got {self.scale}")

    def cron(self, wall: float) -> float:
        if self.scale == 1:
            return wall
        return self.ANCHOR + (wall - self.ANCHOR) * self.scale

    def wall(self, cron: float) -> float:
        if self.scale == 1:
            return cron
        return self.ANCHOR + (cron - self.ANCHOR) / self.scale

    def slot_of(self, execute_time: int) -> int:
        """The slot of a one-shot cron whose wall-clock time is ``execute_time``."""
        return math.ceil(self.cron(execute_time))

    def now(self, wall_now: float) -> int:
        return math.floor(self.cron(wall_now))


@dataclass(frozen=True)
class Schedule:
    """What a cron fires on: an expression in a time zone, or one slot."""

    expression: str | None
    timezone: str
    once_at: int | None = None

    def after(self, moment: int) -> int | None:
        if self.expression is not None:
            return next_slot(self.expression, self.timezone, moment)
        if self.once_at is not None and self.once_at > moment:
            return self.once_at
        return None


@dataclass(frozen=True)
class Decision:
    """What to do with a due slot: which slot fires (if any), what is passed over, what next."""

    due: int
    fire: int | None
    # the due slot itself when it does not fire (and, implied, any slot up to ``fire``)
    skipped: int | None
    reason: str
    next: int | None


def decide(schedule: Schedule, due: int, now: int, grace: int) -> Decision:
    """For the due slot ``due <= now``: fire the most recent slot no older than ``grace``.

    Slots missed while no server ran are not replayed one by one: the latest of
    them fires if it is within the grace window, the rest are recorded as skipped.
    """
    window = now - grace
    latest: int | None = None
    if schedule.expression is None:
        latest = due if due >= window else None
    else:
        slot: int | None = due if due >= window else schedule.after(window - 1)
        for _ in range(MAX_WALK):
            if slot is None or slot > now:
                break
            latest = slot
            slot = schedule.after(slot)
    following = schedule.after(now) if schedule.expression is not None else None
    if latest is None:
        reason = f"missed by more than the grace window of {grace} s"
        return Decision(due, None, due, reason, following)
    if latest != due:
        reason = (
            f"missed; superseded by the later slot {latest} (missed slots do not run one by one)"
        )
        return Decision(due, latest, due, reason, following)
    return Decision(due, due, None, "", following)


def check_execute_time(execute_time: int, wall_now: float) -> None:
    if execute_time >= MAX_EXECUTE_TIME:
        raise _bad("execute_time is epoch seconds, not milliseconds", "execute_time")
    if execute_time <= wall_now:
        moment = datetime.fromtimestamp(execute_time, UTC).isoformat()
        raise JobError(
            ErrorCode.CRON_TIME_PASSED,
            f"The execute time {execute_time} ({moment}) has already passed",
        )


def check_name(name: str) -> str:
    text = name.strip()
    if not text:
        raise JobError.missing("name")
    if len(text) > MAX_NAME:
        raise _bad(f"a cron name is at most {MAX_NAME} characters", "name")
    return text
