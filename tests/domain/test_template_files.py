"""Templates as YAML documents: what an export writes and what an import accepts."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import parse_steps
from jobfleet.domain.template_files import KIND, build, dump, load
from jobfleet.domain.variables import MASK, Variable, parse_definitions

HOSTS = {"host_id_list": [3, 4]}
SCRIPT = "#!/bin/bash\nset -e\necho deploying ${version}\n"


def template() -> tuple[list[dict[str, Any]], list[Variable]]:
    """A stored template: ids assigned, accounts resolved to id and alias."""
    variables = parse_definitions([
        {"name": "hosts", "type": 3, "server": HOSTS, "required": 1},
        {"name": "version", "type": 1, "value": "1.0", "description": "build"},
        {"name": "pw", "type": 4, "value": "hunter2"},
        {"name": "ports", "type": 6, "value": "(80 443)", "changeable": 1},
    ])
    for i, var in enumerate(variables, start=1):
        var.id = i
    root = {"id": 11, "alias": "root"}
    steps = parse_steps([
        {"name": "deploy", "type": 1, "script_info": {
            "script_content": SCRIPT, "script_language": 1, "script_param": "--v ${version}",
            "account": root, "server": {"variable": "hosts"}}},
        {"name": "token", "type": 1, "script_info": {
            "script_content": "use $1", "script_language": 4, "script_param": "tok-123",
            "is_param_sensitive": 1, "account": root, "server": HOSTS}},
        {"name": "tool", "type": 1, "script_info": {
            "script_type": 2, "script_id": "abc", "script_version_id": 5,
            "account": root, "server": HOSTS}},
        {"name": "copy", "type": 2, "file_info": {
            "file_source_list": [{"file_list": ["/srv/a"], "account": root, "server": HOSTS}],
            "file_destination": {"path": "/opt", "account": root,
                                 "server": {"variable": "hosts"}},
            "source_speed_limit": 5}},
        {"name": "confirm", "type": 3, "approval_info": {"approval_message": "ok?"}},
    ], variables)
    for i, step in enumerate(steps, start=1):
        step["id"] = i
    # what the store adds to a referenced script
    steps[2]["script_info"]["script_language"] = 4
    return steps, variables


def exported() -> str:
    steps, variables = template()
    plan_vars = [Variable(**v.__dict__) for v in variables]
    plan_vars[1].value = "2.0"
    plan_vars[2].value = "plan-secret"
    plan_steps = [{**s, "enabled": s["name"] in ("deploy", "confirm")} for s in steps]
    return dump(build("Deploy", "roll out", steps, variables,
                      [("canary", "first hosts", plan_steps, plan_vars)]))


def test_the_document_is_readable_and_holds_no_secret() -> None:
    text = exported()
    for secret in ("hunter2", "plan-secret", "tok-123"):
        assert secret not in text
    assert "script_content: |\n        #!/bin/bash\n        set -e\n" in text
    doc = yaml.safe_load(text)
    assert (doc["kind"], doc["version"]) == (KIND, 1)
    tpl = doc["template"]
    assert (tpl["name"], tpl["description"]) == ("Deploy", "roll out")
    assert [v["type"] for v in tpl["variables"]] == ["host_list", "string", "password",
                                                    "index_array"]
    assert tpl["variables"][0] == {"name": "hosts", "type": "host_list", "required": True,
                                   "server": HOSTS}
    assert tpl["variables"][2]["value"] == ""
    assert tpl["variables"][3]["changeable"] is True
    deploy, token, tool, copy, confirm = tpl["steps"]
    assert "id" not in deploy and deploy["type"] == "script"
    assert deploy["script_info"]["account"] == "root"
    assert deploy["script_info"]["script_language"] == "shell"
    assert list(deploy["script_info"])[-1] == "script_content"
    assert "is_param_sensitive" not in deploy["script_info"]
    assert token["script_info"]["script_param"] == ""
    assert tool["script_info"] == {"script_type": 2, "script_id": "abc",
                                   "script_version_id": 5, "script_timeout": 7200,
                                   "account": "root", "server": HOSTS}
    assert copy["type"] == "file" and copy["file_info"]["source_speed_limit"] == 5
    assert "destination_speed_limit" not in copy["file_info"]
    assert copy["file_info"]["file_source_list"][0]["account"] == "root"
    assert confirm["type"] == "confirm" and confirm["approval_info"]["approval_message"] == "ok?"
    assert doc["plans"] == [{
        "name": "canary", "description": "first hosts", "enabled_steps": ["deploy", "confirm"],
        "variables": [{"name": "hosts", "server": HOSTS}, {"name": "version", "value": "2.0"},
                      {"name": "pw", "value": ""}, {"name": "ports", "value": "(80 443)"}]}]


def test_a_document_reads_back_as_the_template() -> None:
    doc = load(exported())
    _, variables = template()
    assert (doc.name, doc.description) == ("Deploy", "roll out")
    again = parse_definitions(doc.variables)
    assert [(v.name, v.type, v.value, v.server, v.required, v.changeable) for v in again] == [
        (v.name, v.type, MASK if v.name == "pw" else v.value, v.server, v.required,
         v.changeable) for v in variables]
    parsed = parse_steps(doc.steps, again)
    expected = template()[0]
    for step in expected:
        step["id"] = 0
        info = step.get("script_info") or {}
        if info.get("script_type") == 2:
            del info["script_language"]
        for holder in [info, *(step.get("file_info") or {}).get("file_source_list", []),
                       (step.get("file_info") or {}).get("file_destination", {})]:
            if "account" in holder:
                holder["account"] = {"alias": "root"}
    # an empty secret in a file means "keep the one stored"
    expected[1]["script_info"]["script_param"] = MASK
    assert parsed == expected
    [plan] = doc.plans
    assert (plan.name, plan.description, plan.enabled_steps) == (
        "canary", "first hosts", ["deploy", "confirm"])
    assert {v["name"]: v.get("value", v.get("server")) for v in plan.variables} == {
        "hosts": HOSTS, "version": "2.0", "pw": MASK, "ports": "(80 443)"}


def test_types_may_be_numbers_or_names() -> None:
    text = dump({"kind": KIND, "version": 1, "template": {
        "name": "t", "variables": [{"name": "v", "type": 1}, {"name": "p", "type": "PASSWORD"}],
        "steps": [{"name": "s", "type": "Script", "script_info": {
            "script_language": "python", "script_content": "print(1)", "account": "root",
            "server": HOSTS}}, {"name": "c", "type": 3}]}})
    doc = load(text)
    assert doc.steps[0]["type"] == 1 and doc.steps[0]["script_info"]["script_language"] == 4
    assert doc.steps[1]["type"] == 3
    assert [v["type"] for v in doc.variables] == [1, 4]
    assert doc.variables[1]["value"] == MASK and doc.plans == []


def test_text_that_cannot_be_a_literal_block_still_round_trips() -> None:
    content = "echo 'trailing space' \n\tprintf '%s\\n' x\n"
    text = dump({"kind": KIND, "version": 1, "template": {"name": "t", "steps": [
        {"name": "s", "type": 1, "script_info": {"script_content": content,
                                                 "script_language": 1, "account": "root",
                                                 "server": HOSTS}}]}})
    assert load(text).steps[0]["script_info"]["script_content"] == content


def minimal(**change: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": KIND, "version": 1, "template": {
        "name": "t",
        "variables": [{"name": "v", "type": "string"}, {"name": "h", "type": "host_list"}],
        "steps": [{"name": "s", "type": "script", "script_info": {
            "script_language": "shell", "script_content": "true", "account": "root",
            "server": HOSTS}}]},
        "plans": []}
    doc.update(change)
    return doc


def plan(**change: Any) -> dict[str, Any]:
    return minimal(plans=[{"name": "p", **change}])


@pytest.mark.parametrize(("text", "code", "words"), [
    ("kind: [", ErrorCode.BAD_REQUEST, "line 1"),
    ("", ErrorCode.BAD_REQUEST, "must be a mapping"),
    ("- a\n- b\n", ErrorCode.BAD_REQUEST, "must be a mapping"),
    ("!!python/object/apply:os.system [true]", ErrorCode.BAD_REQUEST, "python/object"),
    (minimal(kind="bk/template"), ErrorCode.BAD_REQUEST, "kind"),
    (minimal(version=2), ErrorCode.BAD_REQUEST, "version"),
    (minimal(extra=1), ErrorCode.BAD_REQUEST, "unknown key 'extra'"),
    (minimal(template={"steps": []}), ErrorCode.BAD_REQUEST, "needs a name"),
    (minimal(template={"name": "t", "step": []}), ErrorCode.BAD_REQUEST, "unknown key 'step'"),
    (minimal(template={"name": "t", "steps": {"a": 1}}), ErrorCode.BAD_REQUEST, "a list"),
    (minimal(template={"name": "t", "steps": [{"name": "s", "type": "ssh"}]}),
     ErrorCode.BAD_REQUEST, "'ssh' is not one of"),
    (minimal(template={"name": "t", "steps": []}), ErrorCode.MISSING_PARAM_WITH_NAME,
     "template.steps"),
    (minimal(template={"name": "t", "variables": [{"name": "v", "type": "text"}],
                       "steps": []}), ErrorCode.BAD_REQUEST, "'text' is not one of"),
    (minimal(plans={"p": 1}), ErrorCode.BAD_REQUEST, "plans: must be a list"),
    (minimal(plans=[{"enabled_steps": ["s"]}]), ErrorCode.BAD_REQUEST, "needs a name"),
    (minimal(plans=[{"name": "p"}, {"name": "p"}]), ErrorCode.BAD_REQUEST, "two plans"),
    (plan(enabled=["s"]), ErrorCode.BAD_REQUEST, "unknown key 'enabled'"),
    (plan(enabled_steps=["x"]), ErrorCode.BAD_REQUEST, "no step 'x'"),
    (plan(enabled_steps=[]), ErrorCode.BAD_REQUEST, "at least one step"),
    (plan(variables=[{"name": "w", "value": "1"}]), ErrorCode.BAD_REQUEST, "no variable 'w'"),
    (plan(variables=["v=1"]), ErrorCode.BAD_REQUEST, "mapping with a name"),
    (plan(variables=[{"name": "h", "value": "127.0.0.1"}]), ErrorCode.INVALID_PARAM_WITH_REASON,
     "host variable"),
    (plan(description=["x"]), ErrorCode.BAD_REQUEST, "description"),
    # YAML spells a NUL as "\0": no store column may hold one (PostgreSQL cannot)
    (minimal(template={"name": "t\x00", "steps": []}), ErrorCode.BAD_REQUEST, "NUL"),
    (plan(**{"name\x00": "p"}), ErrorCode.BAD_REQUEST, "NUL"),
])
def test_bad_documents(text: Any, code: int, words: str) -> None:
    if not isinstance(text, str):
        text = yaml.safe_dump(text)
    with pytest.raises(JobError) as err:
        load(text)
    assert err.value.code == code, err.value.message
    assert words in err.value.message


def _laughs(levels: int) -> str:
    """Nine of the level below at each level, written once each: a few hundred bytes
    that are 9**levels values once read."""
    names = "abcdefghijklmnop"
    parts = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        parts.append(f"&{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]")
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("where", ["kind", "plans", "template"])
def test_aliases_that_multiply_a_document_are_refused(where: str) -> None:
    """An alias is read as often as it is used: a short document of nested aliases is
    refused before anything walks, prints or stores what it expands to."""
    text = f"kind: {KIND}\nversion: 1\n{where}: {_laughs(9)}\n"
    with pytest.raises(JobError) as err:
        load(text)
    assert "aliases" in err.value.message, err.value.message
    # a document that refers to itself, too
    with pytest.raises(JobError):
        load(f"kind: {KIND}\nversion: 1\ntemplate: &t {{name: t, steps: [*t]}}\n")


def test_an_alias_that_repeats_a_block_is_read() -> None:
    """What a hand-written document (or PyYAML writing one object twice) does."""
    text = exported()
    block = "      server:\n        host_id_list:\n        - 3\n        - 4\n"
    assert text.count(block) == 2
    first = text.index(block)
    text = (text[:first] + "      server: &hosts\n        host_id_list:\n        - 3\n        - 4\n"
            + text[first + len(block):].replace(block, "      server: *hosts\n"))
    assert "*hosts" in text
    assert load(text) == load(exported())
