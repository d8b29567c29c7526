"""A step's run messages carry a script that is not UTF-8 as its bytes, for every host."""

from __future__ import annotations

import base64
from typing import Any

from jobfleet.domain import protocol
from jobfleet.domain.status import ScriptLanguage
from jobfleet.engine.runner import _wire

GBK = "echo \udcd6\udcd0 ${v}\r\n"


def _template(script: str) -> dict[str, Any]:
    return dict(protocol.run("", lang=int(ScriptLanguage.BAT), script=script, args=[],
                             account="root", timeout=5, env={}, max_output=10))


def test_each_host_gets_its_own_scripts_bytes_and_an_older_agent_the_refusal() -> None:
    template, hosts = _wire(_template(GBK.replace("${v}", "a")),
                            {7: {"script": GBK.replace("${v}", "b"), "env": {"v": "b"}}})
    assert base64.b64decode(template["script_b64"]) == b"echo \xd6\xd0 a\r\n"
    merged = {**template, **hosts[7]}
    assert base64.b64decode(merged["script_b64"]) == b"echo \xd6\xd0 b\r\n"
    # the language of the step picks the refusal an older agent runs: a batch file's
    assert merged["script"].startswith("@echo ") and template["script"] == merged["script"]


def test_a_host_script_that_is_utf8_under_a_step_that_is_not_still_replaces_its_bytes() -> None:
    template, hosts = _wire(_template(GBK), {3: {"script": "echo b\r\n"}})
    merged = {**template, **hosts[3]}
    assert base64.b64decode(merged["script_b64"]) == b"echo b\r\n"


def test_utf8_steps_are_sent_as_before() -> None:
    step = _template("echo 中文\n")
    template, hosts = _wire(step, {1: {"script": "echo é\n"}})
    assert template is step and hosts == {1: {"script": "echo é\n"}}
