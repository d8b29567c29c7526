"""Decoding and checking what a caller sends as a script and its parameters.

A script is any bytes: fleets hold GBK ``.bat`` files and Latin-1 shell scripts, and a
job platform must run exactly what it was sent. Inside the server a script is a ``str``
decoded with ``surrogateescape`` (:func:`exact_text`): valid UTF-8 reads as itself and
each byte that is not becomes a lone surrogate, so text operations (variables, the
shell prelude) work on it and :func:`exact_bytes` gives the caller's bytes back. Such
a string cannot go where only Unicode goes (a JSON answer, a database text column, the
agent's wire): :func:`shown_text` is its text view (what its byte order mark declares,
else UTF-8 with U+FFFD for each bad byte and every ASCII byte kept), which
dangerous-statement rules match, and :func:`stored_script` / :func:`loaded_script`
carry the bytes in a step's JSON config.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import shlex
from dataclasses import dataclass
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


# byte order marks and the encodings they declare, the longest first: UTF-32 LE's
# begins with UTF-16 LE's
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# encodings in which text holds NUL bytes (one in each ASCII character)
WIDE_ENCODINGS = frozenset({"utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be"})


def declared_encoding(raw: bytes) -> tuple[str, int] | None:
    """(encoding, length of the mark) of the byte order mark ``raw`` begins with."""
    for mark, encoding in BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            return encoding, len(mark)
    return None


def undeclared_utf16(raw: bytes) -> str | None:
    """The UTF-16 byte order of ``raw`` when it reads as UTF-16 without a byte order
    mark: most of its characters ASCII, so NUL in every other byte, on one side only."""
    if len(raw) < 2 or len(raw) % 2:
        return None
    even, odd = raw[0::2].count(0), raw[1::2].count(0)
    units = len(raw) // 2
    if odd * 2 >= units and even * 8 <= odd:
        return "utf-16-le"
    if even * 2 >= units and odd * 8 <= even:
        return "utf-16-be"
    return None


def shown_text(text: str) -> str:
    """The text view of a script, which dangerous-statement rules match and people read.

    A byte order mark says how to read the bytes after it (UTF-8, UTF-16 or UTF-32,
    either byte order): Windows saves PowerShell and "Unicode" scripts as UTF-16 with
    one, and the host's interpreter reads them so. Bytes that read as UTF-16 without a
    mark are shown as UTF-16 (a launch refuses them: see :func:`check_script_nul`).
    Anything else is UTF-8 with U+FFFD for each byte that is not: the replacement never
    swallows an ASCII byte (a bad sequence ends before one), so rules and readers see
    every command as the host's shell does."""
    if is_unicode(text) and not text.startswith("\ufeff") and "\x00" not in text:
        return text
    return _shown_bytes(exact_bytes(text))


def _shown_bytes(raw: bytes) -> str:
    """The text view of a script's bytes (see :func:`shown_text`)."""
    declared = declared_encoding(raw)
    if declared is not None:
        encoding, skip = declared
        return raw[skip:].decode(encoding, errors="replace")
    return raw.decode(undeclared_utf16(raw) or "utf-8", errors="replace")


@dataclass(frozen=True)
class ScriptText:
    """A script (an :func:`exact_text` string) with its readings, worked out once
    (:func:`read_script`): a launch checks it for NUL, matches the rules against it and
    stores it from these, not from its bytes again."""

    text: str
    # whether ``text`` is Unicode as it stands (no byte that is not UTF-8)
    unicode: bool
    # its text view (:func:`shown_text`)
    shown: str
    # its bytes read as UTF-8, NUL bytes left out, where a shell may read that rather
    # than ``shown`` (see :func:`rule_texts`); None where the two are the same
    plain: str | None = None


def read_script(script: str | ScriptText) -> ScriptText:
    """``script``'s readings (a :class:`ScriptText` is returned as it is)."""
    if isinstance(script, ScriptText):
        return script
    unicode = is_unicode(script)
    if unicode and "\x00" not in script:
        # the text view, without testing the whole script for UTF-8 again
        return ScriptText(script, True, script.removeprefix("\ufeff"))
    raw = exact_bytes(script)
    shown = _shown_bytes(raw)
    # a shell drops the NUL bytes of the lines it reads: "r\0m" runs rm
    plain = raw.decode("utf-8", errors="replace").replace("\x00", "")
    if plain.removeprefix("\ufeff") == shown:
        return ScriptText(script, unicode, shown)
    return ScriptText(script, unicode, shown, plain)


def rule_texts(script: str | ScriptText) -> tuple[str, ...]:
    """Every reading of a script that dangerous-statement rules match: its text view
    and, where that view is not its bytes read as UTF-8 (a UTF-16 or UTF-32 byte order
    mark, or UTF-16 without one), those too.

    PowerShell reads a UTF-16 script as the text it is; a shell knows no byte order
    mark and runs the ASCII bytes that follow one, NUL bytes left out. Which the host
    does depends on its interpreter, so a mark hides a command from neither reading."""
    read = read_script(script)
    return (read.shown,) if read.plain is None else (read.shown, read.plain)


def check_script_nul(script: str | ScriptText, name: str) -> None:
    """Refuse (1241010) a script that holds NUL once read: a database text column holds
    none, and the job keeps the script's text view.

    NUL bytes are the UTF-16 or UTF-32 encoding of text only after a byte order mark;
    without one the server cannot tell UTF-16 from other bytes, and a rule would match
    a text view the host's interpreter may not read the same way."""
    text = script.text if isinstance(script, ScriptText) else script
    if "\x00" not in text:
        return
    # a byte order mark is 4 bytes at most, and each character stands for 1 or more
    declared = declared_encoding(exact_bytes(text[:4]))
    if declared is not None and declared[0] in WIDE_ENCODINGS:
        if "\x00" not in read_script(script).shown:
            return
        raise JobError.invalid(name, "the decoded script contains NUL characters")
    raise JobError.invalid(
        name,
        "the decoded script contains NUL bytes (a UTF-16 or UTF-32 script must begin "
        "with its byte order mark)",
    )


def encode_exact_base64(text: str | None) -> str:
    """Base64 of the bytes a script stands for: what the caller sent, byte for byte."""
    return encode_script(text or "")


# the key of a step's JSON config that holds a non-UTF-8 script's bytes (base64); the
# ``script_content`` column then holds its text view
EXACT_SCRIPT_KEY = "script_b64"


def stored_script(
    script: str | ScriptText, config: dict[str, Any] | None
) -> tuple[str, dict[str, Any] | None]:
    """(``script_content``, ``config``) of a step that runs ``script``.

    A database text column holds only Unicode: a script with other bytes is kept as its
    text view, for people to read, and its bytes go in the config."""
    if not isinstance(script, ScriptText):
        if is_unicode(script):
            return script, config
        script = ScriptText(script, False, shown_text(script))
    if script.unicode:
        return script.text, config
    return script.shown, {**(config or {}), EXACT_SCRIPT_KEY: encode_exact_base64(script.text)}


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
