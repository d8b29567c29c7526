"""Reading request parameters that may arrive as JSON values or query-string text."""

from __future__ import annotations

from typing import Any

from jobfleet.domain.errors import JobError

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off", ""}


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
        raise JobError.invalid(name)
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise JobError.invalid(name, f"{value!r} is not an integer")
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
