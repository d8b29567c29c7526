"""Integer ranges, nesting and width at the parameter layer."""

from __future__ import annotations

from typing import Any

import pytest

from jobfleet.api.params import MAX_DEPTH, MAX_ITEMS, check_tree, get_int
from jobfleet.domain.errors import JobError

INT64_MAX = 2**63 - 1


def code_of(call: Any) -> int:
    with pytest.raises(JobError) as caught:
        call()
    return caught.value.code


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("job_instance_id", 2**63), ("job_instance_id", -(2**63) - 1), ("id", "9" * 25),
        ("bk_biz_id", 1e19), ("status", 2**31), ("timeout", -(2**31) - 1),
        ("start", -1), ("length", "4294967296"), ("execute_count", -1),
    ],
)
def test_get_int_refuses_values_outside_the_column(name: str, value: Any) -> None:
    assert code_of(lambda: get_int({name: value}, name)) == 1241010


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("job_instance_id", INT64_MAX, INT64_MAX), ("job_instance_id", "42", 42),
        ("status", 2**31 - 1, 2**31 - 1), ("start", 0, 0), ("bk_biz_id", 3.0, 3),
    ],
)
def test_get_int_takes_values_inside(name: str, value: Any, expected: int) -> None:
    assert get_int({name: value}, name) == expected


@pytest.mark.parametrize("value", [1.5, "1e3", "nan", "inf", "0x10", [1], {"a": 1}])
def test_get_int_refuses_what_is_not_an_integer(value: Any) -> None:
    assert code_of(lambda: get_int({"id": value}, "id")) == 1241010


def test_get_int_refuses_booleans() -> None:
    assert code_of(lambda: get_int({"id": True}, "id")) == 1241010


@pytest.mark.parametrize(
    "document",
    [
        {"target_server": {"host_id_list": [1, 2**63]}},
        {"target_server": {"ip_list": [{"ip": "127.0.0.2", "bk_cloud_id": 2**64}]}},
        {"global_var_list": [{"id": "99999999999999999999"}]},
        {"anything": 2.0**63},
        {"anything": -(2**63) - 1},
        {"script_language_list": [1, 2**31]},
        {"start": "-1"},
        {"job_cron_id": "1" * 41},
    ],
)
def test_check_tree_refuses_numbers_out_of_range_at_any_depth(document: dict[str, Any]) -> None:
    assert code_of(lambda: check_tree(document)) == 1241010


def test_check_tree_names_the_field() -> None:
    with pytest.raises(JobError) as caught:
        check_tree({"target_server": {"host_id_list": [1, 2**63]}})
    assert "target_server.host_id_list[1]" in caught.value.message


def test_check_tree_leaves_text_ids_and_small_numbers() -> None:
    check_tree({"agent_id": "9" * 40, "resource_id": "1" * 30, "name": "9" * 60,
                "target_server": {"host_id_list": [1, INT64_MAX]}, "flag": True, "ratio": 0.5})


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": [value]}
    return value


def test_check_tree_bounds_depth_and_width() -> None:
    check_tree({"x": nested(MAX_DEPTH // 2 - 1)})
    assert code_of(lambda: check_tree({"x": nested(MAX_DEPTH)})) == 1241010
    assert code_of(lambda: check_tree({"x": list(range(MAX_ITEMS + 1))})) == 1241010
    assert code_of(lambda: check_tree({"x": {str(i): i for i in range(MAX_ITEMS + 1)}})) == 1241010


def test_text_ids_and_versions_stay_text() -> None:
    check_tree({"script_id": "1" * 32, "version": "202412011230",
                "target_server": {"dynamic_group_list": [{"id": "9" * 32}]}})


def test_check_tree_refuses_nul_in_text_and_names() -> None:
    assert code_of(lambda: check_tree({"task_name": "a\x00b"})) == 1241010
    assert code_of(lambda: check_tree({"x": [{"a\x00": 1}]})) == 1241010


def test_check_tree_bounds_the_values_in_all() -> None:
    wide = {f"k{i}": list(range(MAX_ITEMS)) for i in range(11)}
    assert code_of(lambda: check_tree(wide)) == 1241010
