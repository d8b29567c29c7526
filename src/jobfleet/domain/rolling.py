"""Rolling execution (bk-job ``rolling_config``): how a step's hosts split into batches.

An expression is space-separated parts; part *i* sizes batch *i* and the last part
repeats until every host has a batch:

- ``n``   n hosts
- ``n%``  n percent of all hosts, rounded up (``100%`` only as the last part)
- ``+n``  the previous batch plus n (last part only)
- ``*n``  the previous batch times n (last part only)

Beyond bk-job, ``max_fail_percentage`` (0-100, of all the step's hosts) or
``max_fail_count`` stop the rollout once more hosts than that have failed. The
check runs when a batch ends (serial) or before the next batch starts
(staggered), and counts hosts that have finished and failed; hosts still running
are neither failures nor successes and are left to finish. Once crossed, no
further batch starts and the step fails; the hosts that never ran stay waiting
(status 5), ready for a retry.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from jobfleet.domain.errors import ErrorCode, JobError

MAX_SERIAL_BATCHES = 500
MAX_STAGGERED_BATCHES = 200
MAX_WAIT_MS = 3_600_000
# a number in an expression: far past any host list, and short enough to read at once
MAX_DIGITS = 18

# rolling type / mode / execution_mode (reference §11.2)
TYPE_HOSTS = 1
TYPE_FILES = 2
MODE_PAUSE = 1
MODE_IGNORE = 2
MODE_CONFIRM = 3
SERIAL = 1
STAGGERED = 2


def _bad_expression(expression: str, reason: str) -> JobError:
    return JobError(
        ErrorCode.INVALID_ROLLING_EXPRESSION,
        f"Invalid rolling expression {expression!r}: {reason}",
    )


@dataclass(frozen=True)
class _Part:
    kind: str  # "count", "percent", "plus", "times"
    value: int


def parse_expression(expression: str) -> list[_Part]:
    text = (expression or "").strip()
    if not text:
        raise _bad_expression(expression, "it is empty")
    parts: list[_Part] = []
    tokens = text.split()
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        kind = "count"
        body = token
        if token.endswith("%"):
            kind, body = "percent", token[:-1]
        elif token.startswith("+"):
            kind, body = "plus", token[1:]
        elif token.startswith("*"):
            kind, body = "times", token[1:]
        if not body.isdecimal():
            raise _bad_expression(expression, f"{token!r} is not n, n%, +n or *n")
        if len(body.lstrip("0")) > MAX_DIGITS:
            raise _bad_expression(expression, f"{token[:24]!r}... is larger than any host list")
        value = int(body)
        if value <= 0:
            raise _bad_expression(expression, f"{token!r}: 0 is not allowed")
        if kind == "percent" and value > 100:
            raise _bad_expression(expression, f"{token!r} is more than 100%")
        if kind == "percent" and value == 100 and not last:
            raise _bad_expression(expression, "100% may only be the last part")
        if kind in ("plus", "times") and not last:
            raise _bad_expression(expression, f"{token!r} may only be the last part")
        if kind in ("plus", "times") and i == 0:
            raise _bad_expression(expression, f"{token!r} needs a batch before it")
        parts.append(_Part(kind, value))
    return parts


def batch_sizes(expression: str, total: int) -> list[int]:
    """The size of each batch for ``total`` hosts."""
    parts = parse_expression(expression)
    sizes: list[int] = []
    left = total
    i = 0
    while left > 0:
        part = parts[min(i, len(parts) - 1)]
        if part.kind == "count":
            size = part.value
        elif part.kind == "percent":
            size = math.ceil(total * part.value / 100)
        elif part.kind == "plus":
            size = sizes[-1] + part.value
        else:
            size = sizes[-1] * part.value
        size = max(1, min(size, left))
        sizes.append(size)
        left -= size
        i += 1
        if len(sizes) > MAX_SERIAL_BATCHES:
            break
    return sizes


@dataclass(frozen=True)
class RollingConfig:
    expression: str
    mode: int = MODE_PAUSE
    execution_mode: int = SERIAL
    wait_fixed_ms: int = 0
    wait_random_min_ms: int = 0
    wait_random_max_ms: int = 0
    max_fail_percentage: float | None = None
    max_fail_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": TYPE_HOSTS,
            "expression": self.expression,
            "mode": self.mode,
            "execution_mode": self.execution_mode,
            "batch_start_wait_fixed_ms": self.wait_fixed_ms,
            "batch_start_wait_random_min_ms": self.wait_random_min_ms,
            "batch_start_wait_random_max_ms": self.wait_random_max_ms,
            "max_fail_percentage": self.max_fail_percentage,
            "max_fail_count": self.max_fail_count,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RollingConfig:
        return cls(
            expression=str(raw["expression"]),
            mode=int(raw.get("mode") or MODE_PAUSE),
            execution_mode=int(raw.get("execution_mode") or SERIAL),
            wait_fixed_ms=int(raw.get("batch_start_wait_fixed_ms") or 0),
            wait_random_min_ms=int(raw.get("batch_start_wait_random_min_ms") or 0),
            wait_random_max_ms=int(raw.get("batch_start_wait_random_max_ms") or 0),
            max_fail_percentage=raw.get("max_fail_percentage"),
            max_fail_count=raw.get("max_fail_count"),
        )

    def start_delay(self, rng: random.Random | None = None) -> float:
        """Seconds between one staggered batch's start and the next one's."""
        low, high = self.wait_random_min_ms, self.wait_random_max_ms
        jitter = (rng or random).randint(low, high) if high > low else low
        return (self.wait_fixed_ms + jitter) / 1000

    def threshold_crossed(self, failed: int, total: int) -> bool:
        if self.max_fail_count is not None and failed > self.max_fail_count:
            return True
        if self.max_fail_percentage is not None and total:
            return failed * 100 / total > self.max_fail_percentage
        return False


def _int(raw: dict[str, Any], name: str, default: int) -> int:
    value = raw.get(name)
    if value in (None, ""):
        return default
    if isinstance(value, bool):
        raise JobError.invalid(f"rolling_config.{name}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise JobError.invalid(f"rolling_config.{name}", f"{value!r} is not an integer") from None


def parse_rolling(raw: Any, host_count: int) -> tuple[RollingConfig, list[int]] | None:
    """A request's ``rolling_config``, checked, with its batch sizes; None when absent."""
    if raw in (None, "", {}):
        return None
    if not isinstance(raw, dict):
        raise JobError.invalid("rolling_config", "must be an object")
    kind = _int(raw, "type", TYPE_HOSTS)
    if kind == TYPE_FILES:
        raise JobError(
            ErrorCode.NOT_SUPPORTED,
            "Rolling by source files (rolling_config.type 2) is not supported",
        )
    if kind != TYPE_HOSTS:
        raise JobError.invalid("rolling_config.type", "1 (target hosts) or 2 (source files)")
    mode = _int(raw, "mode", MODE_PAUSE)
    if mode not in (MODE_PAUSE, MODE_IGNORE, MODE_CONFIRM):
        raise JobError.invalid("rolling_config.mode", "1, 2 or 3")
    execution = _int(raw, "execution_mode", SERIAL)
    if execution not in (SERIAL, STAGGERED):
        raise JobError.invalid("rolling_config.execution_mode", "1 (serial) or 2 (staggered)")
    expression = raw.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise JobError.missing("rolling_config.expression")
    waits = {
        name: _int(raw, name, 0)
        for name in (
            "batch_start_wait_fixed_ms",
            "batch_start_wait_random_min_ms",
            "batch_start_wait_random_max_ms",
        )
    }
    for name, value in waits.items():
        if not 0 <= value <= MAX_WAIT_MS:
            raise JobError.invalid(f"rolling_config.{name}", f"must be 0 to {MAX_WAIT_MS}")
    if waits["batch_start_wait_random_max_ms"] < waits["batch_start_wait_random_min_ms"]:
        raise JobError.invalid(
            "rolling_config.batch_start_wait_random_max_ms", "must not be below the minimum"
        )
    percent = raw.get("max_fail_percentage")
    if percent not in (None, ""):
        try:
            percent = float(percent)
        except (TypeError, ValueError):
            raise JobError.invalid("rolling_config.max_fail_percentage") from None
        if not 0 <= percent <= 100:
            raise JobError.invalid("rolling_config.max_fail_percentage", "must be 0 to 100")
    else:
        percent = None
    count = raw.get("max_fail_count")
    count = None if count in (None, "") else _int(raw, "max_fail_count", 0)
    if count is not None and count < 0:
        raise JobError.invalid("rolling_config.max_fail_count", "must not be negative")
    config = RollingConfig(
        expression=expression.strip(),
        mode=mode,
        execution_mode=execution,
        wait_fixed_ms=waits["batch_start_wait_fixed_ms"],
        wait_random_min_ms=waits["batch_start_wait_random_min_ms"],
        wait_random_max_ms=waits["batch_start_wait_random_max_ms"],
        max_fail_percentage=percent,
        max_fail_count=count,
    )
    sizes = batch_sizes(config.expression, host_count)
    limit = MAX_STAGGERED_BATCHES if execution == STAGGERED else MAX_SERIAL_BATCHES
    if len(sizes) > limit:
        raise JobError(
            ErrorCode.ROLLING_BATCHES_EXCEED,
            f"The rolling expression makes {len(sizes)} batches, more than {limit}",
        )
    return config, sizes
