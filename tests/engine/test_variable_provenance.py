"""Which values a host set: kept through the step rows, and what a step is sent for them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cryptography.fernet import Fernet

from jobfleet.domain.status import ScriptLanguage, VariableType
from jobfleet.domain.variables import Variable
from jobfleet.engine.variables import VariableState, collect, script_message, seal, unseal
from jobfleet.store.secrets import Cipher


def _state() -> VariableState:
    return VariableState([
        Variable(1, "v", VariableType.STRING, "launch", changeable=True),
        Variable(2, "same", VariableType.STRING, "kept", changeable=True),
        Variable(3, "ns", VariableType.NAMESPACE, "shared", changeable=True),
    ])


def _template(lang: ScriptLanguage, script: str) -> dict[str, Any]:
    return {"lang": int(lang), "script": script, "args": ["--v=${v}"], "env": {}}


def test_a_value_a_host_set_is_kept_as_such_and_not_pasted_into_code() -> None:
    rows: list[Any] = [SimpleNamespace(bk_host_id=7, variables={"v": 'x";evil()#', "same": "kept",
                                                     "ns": "mine"})]
    after = collect(_state(), rows)
    assert after.host_set() == {"v"}
    assert after.host_set(7) == {"v", "ns"}
    assert after.host_set(8) == {"v"}
    cipher = Cipher(Fernet.generate_key())
    assert unseal(seal(after, cipher), cipher).host_set(7) == {"v", "ns"}
    shared, per_host = script_message(
        _template(ScriptLanguage.PYTHON, 'x = "${v}"\ny = "${same}"\n'), after, [7, 8])
    assert "variable 'v' was set by a host" in shared["refused"]
    assert 'os.environ["v"]' in shared["refused"]
    assert shared["env"]["v"] == 'x";evil()#'
    assert shared["args"] == ['--v=x";evil()#']
    ns_only, per_host = script_message(
        _template(ScriptLanguage.PERL, 'print "${ns} ${same}";'), after, [7, 8])
    assert ns_only["refused"] == "" and ns_only["script"] == 'print "shared kept";'
    assert "variable 'ns'" in per_host[7]["refused"]
    shell, _ = script_message(_template(ScriptLanguage.SHELL, 'echo "${v}"\n'), after, [8])
    assert shell["refused"] == ""


def test_a_stored_variable_with_a_name_reserved_since_is_not_exported() -> None:
    state = VariableState([
        Variable(1, "GIT_SSH_COMMAND", VariableType.STRING, "touch /tmp/x; ssh"),
        Variable(2, "PSModulePath", VariableType.STRING, "/evil"),
        Variable(3, "kept", VariableType.STRING, "v"),
        # refused in any spelling for a new variable, but no program on a POSIX host reads
        # this one: a plan stored with it keeps its variable
        Variable(4, "classpath", VariableType.STRING, "lib/*"),
    ])
    template = {"lang": int(ScriptLanguage.SHELL), "script": "true\n", "args": [], "env": {}}
    shared, _ = script_message(template, state, [1])
    assert shared["env"] == {"kept": "v", "classpath": "lib/*"}
    assert "GIT_SSH_COMMAND" not in shared["script"]
    assert "PSModulePath" not in shared["script"]
    assert "classpath" in shared["script"]
