"""Steps and variables of templates and plans: how they are checked and normalized."""

from __future__ import annotations

from typing import Any

import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import MAX_STEPS, ROLE_LAUNCHER, parse_steps
from jobfleet.domain.status import VariableType
from jobfleet.domain.variables import (
    MASK,
    Variable,
    apply_overrides,
    parse_definitions,
)

HOSTS = {"ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.1"}]}


def script(**info: Any) -> dict[str, Any]:
    body = {"script_content": "echo hi", "script_language": 1, "account": "root",
            "server": HOSTS, **info}
    return {"name": "s", "type": 1, "script_info": body}


def transfer(**info: Any) -> dict[str, Any]:
    body = {"file_source_list": [{"file_list": ["/var/log/a.log"], "account": "root",
                                  "server": HOSTS}],
            "file_destination": {"path": "/tmp/in", "account": "root", "server": HOSTS},
            **info}
    return {"name": "f", "type": 2, "file_info": body}


def code_of(raw: Any, variables: list[Variable] | None = None) -> int:
    with pytest.raises(JobError) as err:
        parse_steps(raw, variables or [])
    return err.value.code


def host_var(name: str = "hosts") -> Variable:
    return Variable(id=1, name=name, type=VariableType.HOST_LIST, server=HOSTS)


# --- steps -------------------------------------------------------------------


def test_a_script_step_gets_every_default() -> None:
    [step] = parse_steps([script()], [])
    assert step == {"id": 0, "name": "s", "type": 1, "script_info": {
        "script_type": 1, "script_content": "echo hi", "script_language": 1,
        "script_param": "", "script_timeout": 7200, "account": {"alias": "root"},
        "server": HOSTS, "is_param_sensitive": 0, "is_ignore_error": 0}}
    # plain ints, not enum members: the step goes to JSON and YAML as it is
    assert type(step["script_info"]["script_type"]) is int


def test_script_step_fields() -> None:
    [step] = parse_steps([{**script(script_param="--a 1", timeout="60", is_param_sensitive="1",
                                    is_ignore_error=True, account={"id": "7", "alias": "x"}),
                           "id": 4, "enabled": False}], [])
    info = step["script_info"]
    assert (step["id"], step["enabled"]) == (4, False)
    assert (info["script_param"], info["script_timeout"]) == ("--a 1", 60)
    assert (info["is_param_sensitive"], info["is_ignore_error"]) == (1, 1)
    assert info["account"] == {"id": 7, "alias": "x"}
    [named] = parse_steps([script(account={"name": "deploy"})], [])
    assert named["script_info"]["account"] == {"alias": "deploy"}


def test_a_referenced_script_keeps_only_its_reference() -> None:
    [step] = parse_steps([script(script_type=2, script_id="abc", script_version_id="12",
                                 script_content=None, script_language=None)], [])
    info = step["script_info"]
    assert (info["script_type"], info["script_id"], info["script_version_id"]) == (2, "abc", 12)
    assert "script_content" not in info and "script_language" not in info
    missing = code_of([script(script_type=3, script_content=None)])
    assert missing == ErrorCode.MISSING_PARAM_WITH_NAME


@pytest.mark.parametrize(("change", "code", "words"), [
    ({"script_content": "  "}, ErrorCode.MISSING_PARAM_WITH_NAME, "script_content"),
    ({"script_language": None}, ErrorCode.MISSING_PARAM_WITH_NAME, "script_language"),
    ({"script_language": 7}, ErrorCode.INVALID_PARAM_WITH_NAME, "script_language"),
    ({"script_language": "shell"}, ErrorCode.INVALID_PARAM_WITH_REASON, "not an integer"),
    ({"script_type": 4}, ErrorCode.INVALID_PARAM_WITH_REASON, "script_type"),
    ({"timeout": 0}, ErrorCode.INVALID_PARAM_WITH_REASON, "259200"),
    ({"script_timeout": 300000}, ErrorCode.INVALID_PARAM_WITH_REASON, "259200"),
    ({"script_timeout": 1.5}, ErrorCode.INVALID_PARAM_WITH_REASON, "integer"),
    ({"account": None}, ErrorCode.MISSING_PARAM_WITH_NAME, "account"),
    ({"account": {"id": "x"}}, ErrorCode.INVALID_PARAM_WITH_REASON, "account.id"),
    ({"server": None}, ErrorCode.STEP_TARGET_EMPTY, "server"),
    ({"server": {"ip_list": []}}, ErrorCode.STEP_TARGET_EMPTY, "server"),
    ({"server": {"ip_list": "127.0.0.1"}}, ErrorCode.INVALID_PARAM_WITH_REASON, "a list"),
    ({"server": ["127.0.0.1"]}, ErrorCode.INVALID_PARAM_WITH_REASON, "server"),
    ({"script_param": "x" * 65536}, ErrorCode.INVALID_PARAM_WITH_REASON, "65535"),
    ({"script_param": "x" * 48129, "is_param_sensitive": 1},
     ErrorCode.INVALID_PARAM_WITH_REASON, "48128"),
])
def test_bad_script_steps(change: dict[str, Any], code: int, words: str) -> None:
    with pytest.raises(JobError) as err:
        parse_steps([script(**change)], [])
    assert err.value.code == code and words in err.value.message
    assert "step_list[0].script_info" in err.value.message


def test_a_server_may_name_a_host_variable() -> None:
    [step] = parse_steps([script(server={"variable": "hosts", "ip_list": HOSTS["ip_list"]})],
                         [host_var()])
    assert step["script_info"]["server"] == {"variable": "hosts"}
    string_var = Variable(id=2, name="name", type=VariableType.STRING)
    for server in ({"variable": "nope"}, {"variable": "name"}, {"variable": ["hosts"]},
                   {"variable": {"a": 1}}):
        assert code_of([script(server=server)], [host_var(), string_var]) == \
            ErrorCode.HOST_VARIABLE_MISSING


def test_a_file_step() -> None:
    [step] = parse_steps([transfer(upload_speed_limit=5, download_speed_limit="7",
                                   timeout=30)], [])
    info = step["file_info"]
    assert info["source_speed_limit"] == 5 and info["destination_speed_limit"] == 7
    # in bytes a second a limit must fit 64 bits, as every message to an agent must
    for field in ("source_speed_limit", "destination_speed_limit"):
        assert code_of([transfer(**{field: 2**31})], []) == ErrorCode.INVALID_PARAM_WITH_REASON
        [fast] = parse_steps([transfer(**{field: 2**31 - 1})], [])
        assert fast["file_info"][field] == 2**31 - 1
    assert info["transfer_mode"] == 2 and info["timeout"] == 30
    assert info["file_destination"] == {"path": "/tmp/in", "account": {"alias": "root"},
                                        "server": HOSTS}
    [uploaded] = parse_steps([transfer(file_source_list=[
        {"file_list": ["blob/a.txt"], "file_type": 2}])], [])
    assert uploaded["file_info"]["file_source_list"] == [
        {"file_list": ["blob/a.txt"], "file_type": 2}]
    [var_path] = parse_steps([transfer(file_destination={
        "path": "${dir}/x", "account": "root", "server": HOSTS})], [])
    assert var_path["file_info"]["file_destination"]["path"] == "${dir}/x"


@pytest.mark.parametrize(("change", "code"), [
    ({"file_source_list": []}, ErrorCode.MISSING_PARAM_WITH_NAME),
    ({"file_source_list": [{"file_list": ["relative.txt"], "account": "root",
                            "server": HOSTS}]}, ErrorCode.INVALID_PARAM_WITH_REASON),
    ({"file_source_list": [{"file_list": [], "server": HOSTS}]},
     ErrorCode.MISSING_PARAM_WITH_NAME),
    ({"file_source_list": [{"file_list": ["a"], "file_type": 3}]},
     ErrorCode.MISSING_PARAM_WITH_NAME),  # no file_source_id or file_source_code
    ({"file_source_list": [{"file_list": ["a"], "file_type": 4}]},
     ErrorCode.INVALID_PARAM_WITH_REASON),
    ({"file_destination": None}, ErrorCode.MISSING_PARAM_WITH_NAME),
    ({"file_destination": {"path": "tmp", "account": "root", "server": HOSTS}},
     ErrorCode.INVALID_PARAM_WITH_REASON),
    ({"file_destination": {"path": "/tmp", "account": "root"}}, ErrorCode.STEP_TARGET_EMPTY),
    ({"transfer_mode": 3}, ErrorCode.NOT_SUPPORTED),
])
def test_bad_file_steps(change: dict[str, Any], code: int) -> None:
    assert code_of([transfer(**change)]) == code


def test_a_confirmation_step() -> None:
    [step] = parse_steps([{"name": "ok?", "type": 3}], [])
    assert step["approval_info"] == {
        "approval_type": 1, "approval_user": {"user_list": [], "role_list": [ROLE_LAUNCHER]},
        "approval_message": "", "notify_channel": []}
    [given] = parse_steps([{"name": "ok?", "type": 3, "approval_info": {
        "approval_type": 2, "approval_user": {"user_list": "alice"},
        "notify_channel": "mail", "approval_message": "go"}}], [])
    # a single name is one user, not a list of letters
    assert given["approval_info"]["approval_user"] == {"user_list": ["alice"], "role_list": []}
    assert given["approval_info"]["notify_channel"] == ["mail"]
    assert code_of([{"name": "x", "type": 3, "approval_info": {"approval_type": 3}}]) == \
        ErrorCode.INVALID_PARAM_WITH_REASON


@pytest.mark.parametrize(("raw", "code"), [
    (None, ErrorCode.MISSING_PARAM_WITH_NAME),
    ([], ErrorCode.MISSING_PARAM_WITH_NAME),
    ({"name": "s"}, ErrorCode.MISSING_PARAM_WITH_NAME),
    (["step"], ErrorCode.INVALID_PARAM_WITH_REASON),
    ([{"type": 1}], ErrorCode.MISSING_PARAM_WITH_NAME),
    ([{"name": "x", "type": 4}], ErrorCode.INVALID_PARAM_WITH_REASON),
    ([{"name": "x"}], ErrorCode.INVALID_PARAM_WITH_REASON),
    ([{"name": "x", "type": 1}], ErrorCode.MISSING_PARAM_WITH_NAME),
    ([script(), script()], ErrorCode.INVALID_PARAM_WITH_REASON),
    ([{**script(), "id": "one"}], ErrorCode.INVALID_PARAM_WITH_REASON),
    ([{**script(), "type": True}], ErrorCode.INVALID_PARAM_WITH_REASON),
])
def test_bad_step_lists(raw: Any, code: int) -> None:
    assert code_of(raw) == code


def test_step_limits_and_names() -> None:
    many = [{**script(), "name": f"s{i}"} for i in range(MAX_STEPS + 1)]
    assert code_of(many) == ErrorCode.INVALID_PARAM_WITH_REASON
    [step] = parse_steps([{**script(), "name": "  padded  "}], [])
    assert step["name"] == "padded"


# --- variables ---------------------------------------------------------------


def test_definitions_of_all_six_types() -> None:
    defs = parse_definitions([
        {"name": "s", "type": 1, "value": 5, "required": "0", "changeable": "true"},
        {"name": "ns", "type": "2"},
        {"name": "hosts", "type": 3, "server": HOSTS, "required": "1", "changeable": 1},
        {"name": "pw", "type": 4, "value": "secret", "id": "9"},
        {"name": "assoc", "type": 5, "value": '(["a"]=1 ["b"]="x y")'},
        {"name": "idx", "type": 6, "value": "(a 'b c')", "description": "d" * 2000},
    ])
    by_name = {v.name: v for v in defs}
    assert [v.type for v in defs] == list(VariableType)
    assert by_name["s"].value == "5" and not by_name["s"].required
    assert by_name["s"].changeable
    assert by_name["hosts"].required and not by_name["hosts"].changeable
    assert by_name["hosts"].server == HOSTS and by_name["pw"].id == 9
    assert len(by_name["idx"].description) == 1024
    assert by_name["pw"].public()["value"] == MASK
    assert by_name["hosts"].public() == {**by_name["hosts"].to_dict(), "server": HOSTS}
    assert parse_definitions(None) == []


@pytest.mark.parametrize(("raw", "words"), [
    ("x", "must be a list"),
    (["x"], "object"),
    ([{"name": "1x", "type": 1}], "not a variable name"),
    ([{"name": "PATH", "type": 1}], "reserved"),
    ([{"name": "JOBFLEET_X", "type": 1}], "reserved"),
    ([{"name": "a", "type": 1}, {"name": "a", "type": 2}], "defined twice"),
    ([{"name": "a", "type": 7}], "not a variable type"),
    ([{"name": "a", "type": "text"}], "not a variable type"),
    ([{"name": "a", "type": 1, "id": "x"}], "not an integer"),
    ([{"name": "a", "type": 1, "id": 1.5}], "not an integer"),
    ([{"name": "a", "type": 1, "id": -1}], "negative"),
    ([{"name": "a", "type": 3, "server": "127.0.0.1"}], "server object"),
    ([{"name": "a", "type": 1, "value": ["x"]}], "must be a string"),
    ([{"name": "a", "type": 5, "value": "a=1"}], "associative array"),
    ([{"name": "a", "type": 5, "value": "(a=1)"}], '["key"]=value'),
    ([{"name": "a", "type": 6, "value": "a b"}], "indexed array"),
    ([{"name": "a", "type": 6, "value": "('a)"}], "quotation"),
    ([{"name": "a", "type": 1, "value": "x" * 70000}], "longer than"),
    # a description was kept as Python writes the object
    ([{"name": "a", "type": 1, "description": {"a": 1}}], "description must be text"),
    ([{"name": "a", "type": 1, "description": ["a"]}], "description must be text"),
])
def test_bad_definitions(raw: Any, words: str) -> None:
    with pytest.raises(JobError) as err:
        parse_definitions(raw)
    assert err.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
    assert words in err.value.message


def plan_vars() -> list[Variable]:
    defs = parse_definitions([
        {"name": "version", "type": 1, "value": "1"},
        {"name": "hosts", "type": 3, "server": HOSTS},
        {"name": "ports", "type": 6, "value": "(80)"},
    ])
    for i, var in enumerate(defs, start=1):
        var.id = i
    return defs


def test_overrides_by_id_and_name() -> None:
    base = plan_vars()
    out = apply_overrides(base, [
        {"id": 1, "value": "2"}, {"name": "ports", "value": "(80 443)"},
        {"id": "2", "server": {"ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.2"}]}},
        {"id": 2, "server": {"host_id_list": [5]}}])
    values = {v.name: v for v in out}
    assert values["version"].value == "2" and values["ports"].value == "(80 443)"
    # one entry per host, as bk-monitor sends them: the union of them all
    assert values["hosts"].server == {
        "ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.2"}], "host_id_list": [5]}
    assert base[0].value == "1" and base[1].server == HOSTS, "the input is not changed"
    assert [v.value for v in apply_overrides(base, None)] == [v.value for v in base]


@pytest.mark.parametrize("entry", [
    {"id": 9, "value": "x"},
    {"id": "x", "value": "x"},
    {"name": "nope", "value": "x"},
    {"name": "hosts", "value": "127.0.0.1"},
    {"name": "version", "server": HOSTS},
    {"name": "ports", "value": "80"},
    "version=1",
])
def test_bad_overrides(entry: Any) -> None:
    with pytest.raises(JobError):
        apply_overrides(plan_vars(), [entry])
    with pytest.raises(JobError):
        apply_overrides(plan_vars(), {"id": 1})
    with pytest.raises(JobError) as err:
        apply_overrides(plan_vars(), [{"value": "x"}])
    assert err.value.code == ErrorCode.MISSING_PARAM_WITH_NAME


@pytest.mark.parametrize("server", [
    {"ip_list": "127.0.0.1"},
    {"ip_list": [{"bk_cloud_id": 0, "ip": "not-an-ip"}]},
    {"ip_list": [{"bk_cloud_id": 0}]},
    {"host_id_list": ["x"]},
    {"topo_node_list": {"id": 1}},
])
def test_a_host_variables_hosts_are_checked_when_given(server: dict[str, Any]) -> None:
    # taken as they came, they were stored and the launch then said the variable had
    # no hosts at all
    for attempt in (
        lambda: parse_definitions([{"name": "a", "type": 3, "server": server}]),
        lambda: apply_overrides(plan_vars(), [{"name": "hosts", "server": server}]),
    ):
        with pytest.raises(JobError) as err:
            attempt()
        assert err.value.code in (ErrorCode.INVALID_PARAM_WITH_NAME,
                                  ErrorCode.INVALID_PARAM_WITH_REASON)
        assert "Invalid parameter [" in err.value.message


@pytest.mark.parametrize("var_type", [True, 1.5, "1.0", [1]])
def test_a_variable_type_is_an_integer(var_type: Any) -> None:
    with pytest.raises(JobError) as err:
        parse_definitions([{"name": "a", "type": var_type}])
    assert "not a variable type" in err.value.message
