"""The dynamic-group filter language."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.host_filters import clean_labels, condition_from_text, parse_filter

WEB = {"hostname": "web-1", "ip": "127.0.0.1", "ipv6": "", "os_type": "Linux",
       "os_name": "Ubuntu 22.04", "bk_cloud_id": 0, "labels": {"env": "prod", "role": "web"}}
# IPv4-mapped loopback, kept in normal form as hosts keep it
DB = {"hostname": "db-1", "ip": "127.0.0.2", "ipv6": str(ipaddress.IPv6Address("::ffff:127.0.6.2")),
      "os_type": "Linux",
      "os_name": "Debian GNU/Linux 12", "bk_cloud_id": 1, "labels": {"env": "test", "gpu": ""}}
WIN = {"hostname": "WIN-7", "ip": "127.0.1.9", "ipv6": "", "os_type": "Windows",
       "os_name": "Windows 10", "bk_cloud_id": 0, "labels": {}}
HOSTS = {"web": WEB, "db": DB, "win": WIN}


def names(raw: Any) -> set[str]:
    host_filter = parse_filter(raw)
    return {name for name, host in HOSTS.items() if host_filter.matches(host)}


def cond(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


@pytest.mark.parametrize(("condition", "expected"), [
    (cond("labels.env", "equal", "prod"), {"web"}),
    (cond("labels.env", "not_equal", "prod"), {"db", "win"}),  # no label also differs
    (cond("hostname", "prefix", "web-"), {"web"}),
    (cond("hostname", "contains", "-"), {"web", "db", "win"}),
    (cond("hostname", "regex", "^(web|db)-[0-9]+$"), {"web", "db"}),
    (cond("ip", "in", ["127.0.0.1", "127.0.1.9"]), {"web", "win"}),
    (cond("ip", "not_in", ["127.0.0.1"]), {"db", "win"}),
    (cond("ipv6", "equal", "0::ffff:7f00:0602"), {"db"}),  # addresses compare in normal form
    (cond("ipv6", "exists"), {"db"}),
    (cond("ipv6", "exists", False), {"web", "win"}),
    (cond("labels.gpu", "exists"), {"db"}),  # a label with an empty value is still there
    (cond("labels.role", "in", ["web", "db"]), {"web"}),
    (cond("bk_cloud_id", "equal", 1), {"db"}),
    (cond("bk_cloud_id", "in", ["0"]), {"web", "win"}),
    (cond("os_type", "equal", "windows"), set()),  # values are case-sensitive
    (cond("os_name", "prefix", "Debian"), {"db"}),
])
def test_each_operator(condition: dict[str, Any], expected: set[str]) -> None:
    assert names([condition]) == expected


def test_conditions_are_and_groups_are_or() -> None:
    linux_prod = [cond("os_type", "equal", "Linux"), cond("labels.env", "equal", "prod")]
    assert names(linux_prod) == {"web"}
    either = {"any": [linux_prod, [cond("hostname", "prefix", "WIN")]]}
    assert names(either) == {"web", "win"}


def test_stored_form_keeps_the_shape() -> None:
    flat = [cond("ip", "in", ["127.0.0.2", "127.0.0.1"]), cond("labels.x", "exists")]
    assert parse_filter(flat).to_json() == [
        {"field": "ip", "op": "in", "value": ["127.0.0.1", "127.0.0.2"]},
        {"field": "labels.x", "op": "exists", "value": True},
    ]
    nested = {"any": [[cond("hostname", "equal", "a")], [cond("hostname", "equal", "b")]]}
    assert parse_filter(nested).to_json() == nested
    assert parse_filter({"any": [[cond("hostname", "equal", "a")]]}).to_json() == [
        cond("hostname", "equal", "a")]


@pytest.mark.parametrize(("raw", "names_in_message"), [
    ([], "needs at least one condition"),
    ("hostname", "must be a list"),
    ({"all": []}, '{"any"'),
    ({"any": [[]]}, "filter.any[0]"),
    ([cond("mac", "equal", "x")], "filter[0].field"),
    ([cond("labels.", "equal", "x")], "filter[0].field"),
    ([cond("hostname", "like", "x")], "filter[0].op"),
    ([cond("hostname", "in", "web")], "non-empty list"),
    ([cond("hostname", "equal", None)], "strings or numbers"),
    ([cond("hostname", "equal", True)], "strings or numbers"),
    ([cond("hostname", "prefix", "")], "not empty"),
    ([cond("hostname", "regex", "(")], "bad regular expression"),
    ([cond("hostname", "regex", "a" * 300)], "at most 256"),
    ([cond("hostname", "exists", "yes")], "true, false"),
    ([{"field": "hostname", "op": "equal", "value": "a", "extra": 1}], "unknown keys"),
    ([cond("hostname", "equal", "a")] * 51, "at most 50"),
])
def test_bad_filters_say_what_is_wrong(raw: Any, names_in_message: str) -> None:
    with pytest.raises(JobError) as info:
        parse_filter(raw)
    assert info.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
    assert names_in_message in info.value.message


def test_conditions_from_cli_text() -> None:
    assert condition_from_text("labels.env equal prod") == cond("labels.env", "equal", "prod")
    assert condition_from_text("hostname regex ^web [0-9]") == cond("hostname", "regex",
                                                                     "^web [0-9]")
    assert condition_from_text("ip in 127.0.0.1, 127.0.0.2") == cond("ip", "in",
                                                                   ["127.0.0.1", "127.0.0.2"])
    assert condition_from_text("labels.gpu exists") == cond("labels.gpu", "exists", True)
    assert condition_from_text("labels.gpu exists false") == cond("labels.gpu", "exists", False)
    for bad in ("hostname", "hostname equal", "labels.x exists maybe"):
        with pytest.raises(ValueError):
            condition_from_text(bad)


def test_agent_labels_are_cleaned() -> None:
    assert clean_labels(None) is None and clean_labels("env=prod") is None
    assert clean_labels({}) == {}
    assert clean_labels({"env": "prod", "bad key": "x", "-x": "y", "n": 3, "list": [1]}) == {
        "env": "prod", "n": "3"}
    assert clean_labels({"k": "v" * 999}) == {"k": "v" * 255}
    assert len(clean_labels({f"k{i}": "v" for i in range(100)}) or {}) == 64
