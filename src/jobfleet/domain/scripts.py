"""Decoding and checking what a caller sends as a script and its parameters."""

from __future__ import annotations

import base64
import binascii
import shlex

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScriptLanguage

MAX_SCRIPT_BYTES = 16_777_215
MAX_PARAM_BYTES = 65_535
MAX_SENSITIVE_PARAM_BYTES = 48_128
MAX_TASK_NAME = 512
DEFAULT_TIMEOUT = 7200
MAX_TIMEOUT = 259_200
RUNNABLE_LANGUAGES = frozenset(
    {
        ScriptLanguage.SHELL,
        ScriptLanguage.BAT,
        ScriptLanguage.PERL,
        ScriptLanguage.PYTHON,
        ScriptLanguage.POWERSHELL,
    }
)


def encode_base64(text: str | None) -> str:
    """Text as the wire carries scripts and parameters."""
    return base64.b64encode((text or "").encode()).decode()


def decode_base64(value: str, name: str, limit: int) -> str:
    """Decode a base64 text field; ``limit`` bounds the decoded size in bytes."""
    # 4 base64 characters carry 3 bytes: refuse before decoding something huge
    if len(value) > (limit // 3 + 2) * 4 + 16:
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            f"Invalid parameter [{name}]: decoded size exceeds {limit} bytes",
        )
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_NAME, f"Invalid parameter [{name}]: not valid base64"
        ) from None
    if len(raw) > limit:
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            f"Invalid parameter [{name}]: decoded size {len(raw)} exceeds {limit} bytes",
        )
    return raw.decode("utf-8", errors="replace")


def split_params(params: str) -> list[str]:
    """Split a decoded ``script_param`` into argv the way a shell would."""
    flat = params.replace("\r\n", " ").replace("\n", " ")
    try:
        return shlex.split(flat)
    except ValueError as exc:
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON, f"Invalid parameter [script_param]: {exc}"
        ) from None


def check_language(value: int | None, *, sql: bool = False) -> ScriptLanguage:
    """A script language; SQL (6) only where ``sql`` (stored scripts, as bk-job keeps them)."""
    if value is None:
        raise JobError.missing("script_language")
    try:
        lang = ScriptLanguage(value)
    except ValueError:
        raise JobError.invalid("script_language") from None
    if lang not in RUNNABLE_LANGUAGES and not (sql and lang == ScriptLanguage.SQL):
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            "Invalid parameter [script_language]: SQL scripts run through fast_execute_sql",
        )
    return lang


def check_timeout(value: int | None, maximum: int = MAX_TIMEOUT) -> int:
    if value is None:
        return DEFAULT_TIMEOUT
    if not 1 <= value <= maximum:
        raise JobError(
            ErrorCode.BAD_REQUEST, f"timeout must be between 1 and {maximum} seconds, got {value}"
        )
    return value
