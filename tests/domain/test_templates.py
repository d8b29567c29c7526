"""Pure template and plan rules: stable ids, masked secrets, names, a plan's choices."""

from __future__ import annotations

from typing import Any

import pytest

from jobfleet.domain.errors import JobError
from jobfleet.domain.plans import enable, synced, with_values
from jobfleet.domain.status import VariableType
from jobfleet.domain.templates import (
    MAX_DESCRIPTION,
    MAX_NAME,
    assign_ids,
    check_description,
    check_name,
    keep_masked,
    number,
    public_steps,
)
from jobfleet.domain.variables import MASK, Variable


def sensitive(ident: int, param: str) -> dict[str, Any]:
    return {"id": ident, "name": f"s{ident}", "type": 1,
            "script_info": {"script_param": param, "is_param_sensitive": 1}}


def test_ids_are_kept_by_id_then_by_name_and_new_ones_are_fresh() -> None:
    existing = {1: "a", 2: "b", 5: "e"}
    ids, nxt = assign_ids([(2, "x"), (0, "a"), (0, "b"), (2, "y"), (9, "z")], existing, 6)
    # 2 is claimed by id first, so "b" by name cannot take it; a repeated or unknown id is new
    assert (ids, nxt) == ([2, 1, 6, 7, 8], 9)


def test_number_sets_ids_in_place_and_drops_the_enabled_flag() -> None:
    steps = [{"name": "b", "enabled": False}, {"name": "new"}]
    variables = [Variable(0, "v", VariableType.STRING)]
    nxt = number(steps, variables, [{"id": 4, "name": "b"}], [Variable(3, "v",
                 VariableType.STRING)], 7, 4)
    assert nxt == (8, 4)
    assert steps == [{"id": 4, "name": "b"}, {"id": 7, "name": "new"}]
    assert variables[0].id == 3


def test_mask_keeps_the_stored_secret_of_the_same_id_and_type() -> None:
    old_vars = [Variable(1, "p", VariableType.PASSWORD, "kept"),
                Variable(2, "q", VariableType.STRING, "plain")]
    variables = [Variable(1, "p", VariableType.PASSWORD, MASK),
                 Variable(2, "q", VariableType.PASSWORD, MASK),
                 Variable(3, "r", VariableType.PASSWORD, MASK)]
    steps = [sensitive(1, MASK), sensitive(2, MASK), sensitive(3, "new")]
    keep_masked(steps, variables, [sensitive(1, "old"), sensitive(3, "was")], old_vars)
    assert [v.value for v in variables] == ["kept", "", ""]
    assert [s["script_info"]["script_param"] for s in steps] == ["old", "", "new"]


def test_public_steps_mask_sensitive_parameters_of_a_copy() -> None:
    steps = [sensitive(1, "secret"), sensitive(2, "")]
    shown = public_steps(steps)
    assert [s["script_info"]["script_param"] for s in shown] == [MASK, ""]
    assert steps[0]["script_info"]["script_param"] == "secret"


def test_names_and_descriptions() -> None:
    assert check_name("  deploy ") == "deploy"
    assert check_description(None) == ""
    for bad in (None, "", "   ", 3, "x" * (MAX_NAME + 1)):
        with pytest.raises(JobError):
            check_name(bad)
    for bad in (3, "x" * (MAX_DESCRIPTION + 1)):
        with pytest.raises(JobError):
            check_description(bad)


def test_a_plan_enables_steps_by_id() -> None:
    steps: list[dict[str, Any]] = [{"id": 1}, {"id": 2}]
    enable(steps, [2])
    assert [s["enabled"] for s in steps] == [False, True]
    enable(steps, None)
    assert [s["enabled"] for s in steps] == [True, True]
    for wrong in ([3], []):
        with pytest.raises(JobError):
            enable(steps, wrong)


def test_values_override_but_a_masked_password_keeps_its_value() -> None:
    current = [Variable(1, "p", VariableType.PASSWORD, "kept"),
               Variable(2, "s", VariableType.STRING, "old")]
    out = with_values(current, [{"id": 1, "value": MASK}, {"name": "s", "value": "new"}])
    assert [v.value for v in out] == ["kept", "new"]


def test_sync_keeps_the_plan_choices_that_still_fit() -> None:
    plan_steps = [{"id": 1, "enabled": False}, {"id": 2, "enabled": True}]
    plan_vars = [Variable(1, "a", VariableType.STRING, "mine"),
                 Variable(2, "b", VariableType.STRING, "mine")]
    tpl_vars = [Variable(1, "a", VariableType.STRING, "default"),
                Variable(2, "b", VariableType.PASSWORD, "default")]
    steps, variables = synced(plan_steps, plan_vars, [{"id": 1}, {"id": 3}], tpl_vars)
    assert steps == [{"id": 1, "enabled": False}, {"id": 3, "enabled": True}]
    # the value stays where id and type match; a changed type takes the template's
    assert [v.value for v in variables] == ["mine", "default"]
