"""Decoding and checking what a caller sends as a script and its parameters.

A script is any bytes: fleets hold GBK ``.bat`` files and Latin-1 shell scripts, and a
job platform must run exactly what it was sent. Inside the server a script is a ``str``
decoded with ``surrogateescape`` (:func:`exact_text`): valid UTF-8 reads as itself and
each byte that is not becomes a lone surrogate, so text operations (variables, the
shell prelude) work on it and :func:`exact_bytes` gives the caller's bytes back. Such
a string cannot go where only Unicode goes (a JSON answer, a database text column, the
agent's wire): :func:`shown_text` is its text view (U+FFFD for each bad byte, every
ASCII byte kept, which is what dangerous-statement rules match), and
:func:`stored_script` / :func:`loaded_script` carry the bytes in a step's JSON config.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from typing import Any

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.protocol import encode_script
from jobfleet.domain.protocol import is_unicode as is_unicode  # the wire's test, and the store's
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


def decode_base64_bytes(value: str, name: str, limit: int) -> bytes:
    """Decode a base64 field to its bytes; ``limit`` bounds the decoded size."""
    # 4 base64 characters carry 3 bytes: refuse before decoding something huge
    if len(value) > (limit // 3 + 2) * 4 + 16:
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            f"Invalid parameter [{name}]: decoded size exceeds {limit} bytes",
        )
    try:
        raw = base64.b64decode(_standard_base64("".join(value.split())), validate=True)
    except (binascii.Error, ValueError):
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_NAME, f"Invalid parameter [{name}]: not valid base64"
        ) from None
    if len(raw) > limit:
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            f"Invalid parameter [{name}]: decoded size {len(raw)} exceeds {limit} bytes",
        )
    return raw


_URL_SAFE = str.maketrans("-_", "+/")


def _standard_base64(value: str) -> str:
    """``value`` in the standard alphabet, padded. bk-job decodes with commons-codec, which
    takes the URL-safe alphabet and a missing padding (Go's ``RawStdEncoding``, base64url
    encoders); what is not base64 in either form is still refused."""
    value = value.translate(_URL_SAFE)
    if "=" not in value and len(value) % 4 in (2, 3):
        value += "=" * (4 - len(value) % 4)
    return value


def decode_base64(value: str, name: str, limit: int) -> str:
    """Decode a base64 field that must hold UTF-8 text.

    Where a value is kept or used only as text, a byte that is not UTF-8 is refused:
    replacing it would change what the caller sent without telling them."""
    raw = decode_base64_bytes(value, name, limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            f"Invalid parameter [{name}]: the decoded value is not UTF-8 text (byte "
            f"0x{raw[exc.start]:02x} at offset {exc.start}); send it encoded as UTF-8",
        ) from None


def decode_base64_script(value: str, name: str, limit: int) -> str:
    """Decode a base64 script of any encoding, losslessly (see :func:`exact_text`)."""
    return exact_text(decode_base64_bytes(value, name, limit))


def exact_text(raw: bytes) -> str:
    """``raw`` as a string that :func:`exact_bytes` turns back into ``raw``."""
    return raw.decode("utf-8", errors="surrogateescape")


def exact_bytes(text: str) -> bytes:
    """The bytes an :func:`exact_text` string stands for (UTF-8 for ordinary text)."""
    return text.encode("utf-8", errors="surrogateescape")


def shown_text(text: str) -> str:
    """The text view of a script: U+FFFD for each byte that is not UTF-8.

    The replacement never swallows an ASCII byte (a bad sequence ends before one), so
    rules and readers see every command as the host's shell does."""
    if is_unicode(text):
        return text
    return exact_bytes(text).decode("utf-8", errors="replace")


def encode_exact_base64(text: str | None) -> str:
    """Base64 of the bytes a script stands for: what the caller sent, byte for byte."""
    return encode_script(text or "")


# the key of a step's JSON config that holds a non-UTF-8 script's bytes (base64); the
# ``script_content`` column then holds its text view
EXACT_SCRIPT_KEY = "script_b64"


def stored_script(text: str, config: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """(``script_content``, ``config``) of a step that runs ``text``.

    A database text column holds only Unicode: a script with other bytes is kept as its
    text view, for people to read, and its bytes go in the config."""
    if is_unicode(text):
        return text, config
    return shown_text(text), {**(config or {}), EXACT_SCRIPT_KEY: encode_exact_base64(text)}


def loaded_script(content: str | None, config: dict[str, Any] | None) -> str:
    """The script a step runs, as :func:`stored_script` kept it."""
    exact = (config or {}).get(EXACT_SCRIPT_KEY)
    if isinstance(exact, str):
        return exact_text(base64.b64decode(exact))
    return content or ""


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
