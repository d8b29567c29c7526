"""The filter language of dynamic groups: which hosts of a business a saved group selects.

A filter is a list of conditions that a host must all meet::

    [{"field": "labels.env", "op": "equal", "value": "prod"},
     {"field": "hostname", "op": "prefix", "value": "web-"}]

or an object whose ``any`` holds several such lists, of which a host must meet one::

    {"any": [[{"field": "labels.role", "op": "equal", "value": "db"}],
             [{"field": "hostname", "op": "regex", "value": "^db[0-9]+$"}]]}

Fields: ``hostname``, ``ip``, ``ipv6``, ``os_type``, ``os_name``, ``bk_cloud_id`` and
``labels.<key>``. Operators: ``equal``, ``not_equal``, ``contains``, ``prefix``, ``regex``
(Python ``re.search``) take one value; ``in`` and ``not_in`` a list; ``exists`` an optional
boolean (default true: the label is there, or the field is not empty). Values compare as
text, IP addresses in their normal form (``0:0::1`` is ``::1``). ``not_equal`` and
``not_in`` also match hosts without the label. docs/topology.md is the user's guide.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobfleet.domain.errors import ErrorCode, JobError

# bk-job's "failed to find hosts by dynamic group"
DYNAMIC_GROUP_NOT_FOUND = ErrorCode.DYNAMIC_GROUP_NOT_FOUND

FIELDS = ("hostname", "ip", "ipv6", "os_type", "os_name", "bk_cloud_id")
LABEL_PREFIX = "labels."
ONE_VALUE_OPS = ("equal", "not_equal", "contains", "prefix", "regex")
LIST_OPS = ("in", "not_in")
OPS = (*ONE_VALUE_OPS, *LIST_OPS, "exists")

MAX_GROUPS = 20
MAX_CONDITIONS = 50
MAX_LIST_VALUES = 10_000
MAX_VALUE_LENGTH = 1024
# Python's re has no time limit; short patterns keep a bad one from costing much
MAX_REGEX_LENGTH = 256

# what an agent may report as labels (``--label key=value``)
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}")
MAX_LABELS = 64
MAX_LABEL_VALUE = 255


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    # a text for one-value ops, a frozenset for in/not_in, a bool for exists
    value: Any
    pattern: re.Pattern[str] | None = None

    @property
    def label(self) -> str | None:
        return self.field[len(LABEL_PREFIX) :] if self.field.startswith(LABEL_PREFIX) else None

    def actual(self, host: Mapping[Any, Any]) -> str | None:
        """The host's value as text; None for a label it does not have."""
        label = self.label
        if label is not None:
            labels = host.get("labels")
            found = labels.get(label) if isinstance(labels, dict) else None
            return None if found is None else str(found)
        value = host.get(self.field)
        return "" if value is None else str(value)

    def matches(self, host: Mapping[Any, Any]) -> bool:
        actual = self.actual(host)
        op = self.op
        if op == "exists":
            # a label is there even when empty; a field only when it has a value
            present = actual is not None and (actual != "" or self.label is not None)
            return present is self.value
        if op == "not_equal":
            return bool(actual != self.value)
        if op == "not_in":
            return actual not in self.value
        if actual is None:
            return False
        if op == "equal":
            return bool(actual == self.value)
        if op == "in":
            return actual in self.value
        if op == "contains":
            return self.value in actual
        if op == "prefix":
            return actual.startswith(self.value)
        assert self.pattern is not None
        return self.pattern.search(actual) is not None

    def to_json(self) -> dict[str, Any]:
        value = sorted(self.value) if isinstance(self.value, frozenset) else self.value
        return {"field": self.field, "op": self.op, "value": value}


@dataclass(frozen=True)
class HostFilter:
    """Groups of conditions: a host matches when it meets every condition of one group."""

    groups: tuple[tuple[Condition, ...], ...]

    def matches(self, host: Mapping[Any, Any]) -> bool:
        return any(all(c.matches(host) for c in group) for group in self.groups)

    def to_json(self) -> list[dict[str, Any]] | dict[str, Any]:
        """The stored form: a plain list when there is one group."""
        groups = [[c.to_json() for c in group] for group in self.groups]
        return groups[0] if len(groups) == 1 else {"any": groups}


def parse_filter(raw: Any, name: str = "filter") -> HostFilter:
    """Validate a filter as a caller sent it; every error names the part that is wrong."""
    if isinstance(raw, dict):
        if set(raw) != {"any"} or not isinstance(raw["any"], list) or not raw["any"]:
            raise JobError.invalid(name, 'give a list of conditions, or {"any": [lists]}')
        if len(raw["any"]) > MAX_GROUPS:
            raise JobError.invalid(f"{name}.any", f"at most {MAX_GROUPS} groups")
        groups = tuple(_group(item, f"{name}.any[{i}]") for i, item in enumerate(raw["any"]))
        return HostFilter(groups)
    return HostFilter((_group(raw, name),))


def _group(raw: Any, name: str) -> tuple[Condition, ...]:
    if not isinstance(raw, list):
        raise JobError.invalid(name, "must be a list of conditions")
    if not raw:
        raise JobError.invalid(name, "needs at least one condition")
    if len(raw) > MAX_CONDITIONS:
        raise JobError.invalid(name, f"at most {MAX_CONDITIONS} conditions")
    return tuple(parse_condition(item, f"{name}[{i}]") for i, item in enumerate(raw))


def parse_condition(raw: Any, name: str = "condition") -> Condition:
    if not isinstance(raw, dict):
        raise JobError.invalid(name, "must be an object {field, op, value}")
    unknown = set(raw) - {"field", "op", "value"}
    if unknown:
        raise JobError.invalid(name, f"unknown keys {sorted(unknown)}")
    field = raw.get("field")
    if not isinstance(field, str) or not _known_field(field):
        raise JobError.invalid(
            f"{name}.field", f"{field!r} is not one of {', '.join(FIELDS)} or labels.<key>"
        )
    op = raw.get("op")
    if op not in OPS:
        raise JobError.invalid(f"{name}.op", f"{op!r} is not one of {', '.join(OPS)}")
    value = raw.get("value")
    where = f"{name}.value"
    if op == "exists":
        if value is None:
            value = True
        if not isinstance(value, bool):
            raise JobError.invalid(where, "exists takes true, false or nothing")
        return Condition(field, op, value)
    if op in LIST_OPS:
        if not isinstance(value, list) or not value:
            raise JobError.invalid(where, f"{op} takes a non-empty list")
        if len(value) > MAX_LIST_VALUES:
            raise JobError.invalid(where, f"at most {MAX_LIST_VALUES} values")
        return Condition(field, op, frozenset(_scalar(field, v, where) for v in value))
    text = _scalar(field, value, where)
    if op in ("contains", "prefix", "regex") and not text:
        raise JobError.invalid(where, f"{op} needs a value that is not empty")
    if op != "regex":
        return Condition(field, op, text)
    if len(text) > MAX_REGEX_LENGTH:
        raise JobError.invalid(where, f"a pattern may have at most {MAX_REGEX_LENGTH} characters")
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise JobError.invalid(where, f"bad regular expression: {exc}") from None
    return Condition(field, op, text, pattern)


def _known_field(field: str) -> bool:
    if field.startswith(LABEL_PREFIX):
        return LABEL_KEY.fullmatch(field[len(LABEL_PREFIX) :]) is not None
    return field in FIELDS


def _scalar(field: str, value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise JobError.invalid(where, "values are strings or numbers")
    text = str(value)
    if len(text) > MAX_VALUE_LENGTH:
        raise JobError.invalid(where, f"longer than {MAX_VALUE_LENGTH} characters")
    if field in ("ip", "ipv6"):
        # hosts keep addresses in normal form; a value in another spelling still matches
        try:
            return str(ipaddress.ip_address(text.strip()))
        except ValueError:
            return text
    if field == "bk_cloud_id":
        return text.strip()
    return text


def condition_from_text(text: str) -> dict[str, Any]:
    """``FIELD OP [VALUE]`` as the CLI takes it; ``in``/``not_in`` split VALUE at commas.

    >>> condition_from_text("labels.env equal prod")
    {'field': 'labels.env', 'op': 'equal', 'value': 'prod'}
    """
    parts = text.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError(f"{text!r}: write FIELD OP VALUE, e.g. 'hostname prefix web-'")
    field, op = parts[0], parts[1]
    if op == "exists":
        if len(parts) == 3 and parts[2].lower() not in ("true", "false"):
            raise ValueError(f"{text!r}: exists takes true, false or nothing")
        return {"field": field, "op": op, "value": len(parts) < 3 or parts[2].lower() == "true"}
    if len(parts) < 3:
        raise ValueError(f"{text!r}: {op} needs a value")
    value: Any = parts[2]
    if op in LIST_OPS:
        value = [v.strip() for v in parts[2].split(",") if v.strip()]
    return {"field": field, "op": op, "value": value}


def clean_labels(raw: Any) -> dict[str, str] | None:
    """The labels an agent reported, without what does not fit; None if it sent none."""
    if not isinstance(raw, dict):
        return None
    labels: dict[str, str] = {}
    for key, value in raw.items():
        if len(labels) >= MAX_LABELS:
            break
        if isinstance(key, str) and LABEL_KEY.fullmatch(key) and isinstance(value, str | int):
            labels[key] = str(value)[:MAX_LABEL_VALUE]
    return labels
