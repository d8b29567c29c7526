"""Reading request parameters that may arrive as JSON values or query-string text."""

from __future__ import annotations

import re
from typing import Any

from jobfleet.domain.errors import ErrorCode, JobError

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off", ""}

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
# Request fields stored in (or compared with) an Integer column, which PostgreSQL keeps
# in 32 bits; every other integer field is BigInteger or lives in JSON (64 bits). SQLite
# takes wider values, so the bounds are enforced here, the same on both backends.
# fmt: off
INT32_FIELDS = frozenset({
    "action", "batch", "category", "execute_count", "execution_mode", "file_type",
    "is_param_sensitive", "is_ignore_error", "launch_mode", "max_running_jobs", "mode",
    "notified", "operation_code", "script_language", "script_type", "status", "task_type",
    "timeout", "transfer_mode", "type", "uses",
})
# fmt: on
# paging never starts below zero nor past what a 32-bit offset holds
NON_NEGATIVE32 = frozenset({"start", "length", "limit", "offset", "execute_count"})
# whatever the name, a JSON document nests at most this deep and holds at most this many
# items in one array or object: handlers (and the audit log that keeps request details)
# walk what they are given, and orjson refuses to render past 254 levels
MAX_DEPTH = 32
MAX_ITEMS = 100_000
# and at most this many values in all, so that walking one costs little time
MAX_VALUES = 1_000_000
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")
_MAX_DIGITS = 40
# ids that are text (tokens, hex), whatever digits they happen to hold
TEXT_IDS = frozenset(
    {"agent_id", "bk_agent_id", "blob_id", "file_id", "resource_id", "request_id", "script_id"}
)
# objects whose ``id`` is text: dynamic groups
TEXT_ID_OBJECTS = frozenset({"dynamic_group"})
_INT_SUFFIXES = ("_id", "_ids", "_time", "_time_start", "_time_end", "_ms", "_speed_limit")


_DECIMAL = re.compile(r"[+-]?[0-9]+")


def decimal_int(value: Any) -> int | None:
    """An id as bk-job reads it: a JSON integer, an integral number or ASCII decimal
    text; None for ``true``, ``2.5``, other scripts' digits or ``2_0``, which Python's
    ``int()`` would take (and, for a cloud, read as another host's)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _DECIMAL.fullmatch(text := value.strip()):
        try:
            return int(text)
        except ValueError:  # past Python's digit limit for int()
            return None
    return None


def bounds_of(name: str) -> tuple[int, int]:
    """The range an integer parameter called ``name`` (its last path component) may take."""
    if name in NON_NEGATIVE32:
        return 0, INT32[1]
    if name in INT32_FIELDS:
        return INT32
    return INT64


def check_range(name: str, number: int, key: str | None = None) -> int:
    low, high = bounds_of(key if key is not None else name)
    if not low <= number <= high:
        raise JobError.invalid(name, f"{number} is outside the range {low}..{high}")
    return number


def _is_int_field(key: str) -> bool:
    base = key.removesuffix("_list")
    if base in TEXT_IDS:
        return False
    return (
        base == "id"
        or base in INT32_FIELDS
        or base in NON_NEGATIVE32
        or (base.endswith(_INT_SUFFIXES))
    )


def check_tree(value: Any, name: str = "") -> None:
    """Refuse a document nested too deeply, too large, with integers out of range or NULs.

    Numbers past 64 bits are refused under any name (no column holds them); integers
    (and integer text) of a known integer field are held to that field's range.
    """
    _Walk().visit(value, name, "", 0)


class _Walk:
    def __init__(self) -> None:
        self.left = MAX_VALUES

    def visit(self, value: Any, name: str, key: str, depth: int) -> None:
        self.left -= 1
        if self.left < 0:
            raise JobError.invalid("body", f"more than {MAX_VALUES} values in all")
        if depth > MAX_DEPTH:
            raise JobError.invalid(name or "body", f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            self.visit_object(value, name, key, depth)
        elif isinstance(value, list):
            if len(value) > MAX_ITEMS:
                raise JobError.invalid(name, f"more than {MAX_ITEMS} items")
            item_key = key.removesuffix("_list")
            for i, item in enumerate(value):
                self.visit(item, f"{name}[{i}]", item_key, depth + 1)
        elif isinstance(value, bool):
            return
        elif isinstance(value, int):
            check_range(name, value, key if _is_int_field(key) else "")
        elif isinstance(value, float):
            # orjson reads integers past 64 bits as floats: at +-2**63 precision is lost
            if not -(2.0**63) < value < 2.0**63:
                raise JobError.invalid(name, f"{value!r} is outside the 64-bit range")
            if _is_int_field(key) and value.is_integer():
                check_range(name, int(value), key)
        elif isinstance(value, str):
            _check_text(value, name, key)

    def visit_object(self, value: dict[Any, Any], name: str, key: str, depth: int) -> None:
        if len(value) > MAX_ITEMS:
            raise JobError.invalid(name or "body", f"more than {MAX_ITEMS} fields")
        text_id = key in TEXT_ID_OBJECTS
        for k, item in value.items():
            child = str(k)
            if "\x00" in child:
                raise JobError.invalid(name or "body", "a field name holds a NUL character")
            child_key = "" if text_id and child == "id" else child
            self.visit(item, f"{name}.{child}" if name else child, child_key, depth + 1)


def _check_text(value: str, name: str, key: str) -> None:
    if "\x00" in value:
        # PostgreSQL text and JSON cannot hold NUL, SQLite can: refuse it on both alike
        raise JobError.invalid(name, "holds a NUL character")
    if _is_int_field(key) and _INTEGER_TEXT.fullmatch(value):
        if len(value) > _MAX_DIGITS:
            raise JobError.invalid(name, "the number is outside the 64-bit range")
        check_range(name, int(value), key)


def get_int(
    params: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise JobError.missing(name)
        return default
    if isinstance(value, bool):
        # JSON true is not 1 here: the same answer as any other non-integer
        raise JobError.invalid(name, f"{str(value).lower()} is not an integer")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None:
        raise JobError.invalid(name, f"{str(value)[:64]!r} is not an integer")
    check_range(name, number)
    if minimum is not None and number < minimum:
        raise JobError.invalid(name, f"must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise JobError.invalid(name, f"must be at most {maximum}")
    return number


def need_int(
    params: dict[str, Any], name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    value = get_int(params, name, required=True, minimum=minimum, maximum=maximum)
    assert value is not None
    return value


def get_bool(params: dict[str, Any], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise JobError.invalid(name, f"{value!r} is not a boolean")


def get_str(
    params: dict[str, Any], name: str, *, required: bool = False, max_length: int | None = None
) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise JobError.missing(name)
        return None
    if not isinstance(value, str | int):
        raise JobError.invalid(name)
    text = str(value)
    if max_length is not None and len(text) > max_length:
        raise JobError.invalid(name, f"longer than {max_length} characters")
    return text


def get_list(params: dict[str, Any], name: str) -> list[Any]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        raise JobError.invalid(name, "must be a list")
    return value


_BAD_ID_MESSAGES = {
    ErrorCode.INVALID_PARAM: "Invalid parameters: {0} is missing or not positive",
    ErrorCode.INVALID_PARAM_WITH_NAME: "Invalid parameter [{0}]",
    ErrorCode.MISSING_OR_INVALID_PARAM: "Missing or invalid parameter [{0}]",
}


def positive_id(params: dict[str, Any], name: str, code: ErrorCode) -> int:
    """An id that bk-job checks by hand: missing and below 1 answered alike, with the code
    that route's own check uses (``_BAD_ID_MESSAGES``)."""
    value = get_int(params, name)
    if value is None or value < 1:
        raise JobError(code, _BAD_ID_MESSAGES[code].format(name))
    return value
