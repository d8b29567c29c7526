"""The bash prelude that declares a step's variables: a value is data, never code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import VariableType
from jobfleet.domain.variables import (
    Variable,
    check_name,
    is_reserved,
    shell_prelude,
    unquote_array,
)

COLORS = Variable(1, "colors", VariableType.INDEX_ARRAY)
SIZES = Variable(2, "sizes", VariableType.ASSOC_ARRAY)


def _bash(script: str) -> str:
    done = subprocess.run(["bash", "--noprofile", "--norc", "-c", script],
                          capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


@pytest.mark.parametrize("value", [
    "(x) ; touch {mark} ; (y)",
    "(a $(touch {mark}))",
    "(a `touch {mark}`)",
    "(a\n) ; touch {mark} #)",
    "touch {mark}",
])
def test_an_indexed_array_value_cannot_run_code(tmp_path: Path, value: str) -> None:
    mark = tmp_path / "ran"
    prelude = shell_prelude([COLORS], {"colors": value.format(mark=mark)})
    _bash(prelude + 'printf "<%s>" "${colors[@]}"\n')
    assert not mark.exists(), prelude


@pytest.mark.parametrize("value", [
    '(["k"]=$(touch {mark}))',
    '(["k"]=v) ; touch {mark} ; (x)',
    '(["$(touch {mark})"]=v)',
    '(["k"]="`touch {mark}`")',
    "touch {mark}",
])
def test_an_associative_array_value_cannot_run_code(tmp_path: Path, value: str) -> None:
    mark = tmp_path / "ran"
    prelude = shell_prelude([SIZES], {"sizes": value.format(mark=mark)})
    _bash(prelude + 'declare -p sizes\n')
    assert not mark.exists(), prelude


def test_array_values_keep_their_items() -> None:
    prelude = shell_prelude([COLORS, SIZES], {
        "colors": "(red 'dark green' \"it's\" $HOME)",
        "sizes": '(["big"]=XL ["small"]="S \\"quoted\\"" [plain]=p)'})
    out = _bash(prelude + 'printf "<%s>" "${colors[@]}"; echo\n'
                'printf "%s=%s;" big "${sizes[big]}" small "${sizes[small]}" plain '
                '"${sizes[plain]}"; echo "${#sizes[@]}"\n')
    assert out == '<red><dark green><it\'s><$HOME>\nbig=XL;small=S "quoted";plain=p;3\n'


def test_empty_array_values_declare_empty_arrays() -> None:
    prelude = shell_prelude([COLORS, SIZES], {"colors": "", "sizes": "()"})
    assert _bash(prelude + 'echo "${#colors[@]} ${#sizes[@]}"; declare -p sizes\n') == (
        "0 0\ndeclare -A sizes=()\n")


def test_an_indexed_array_a_step_changed_keeps_its_items_into_the_next_step() -> None:
    # a step's changed array comes back as bash's ``declare -p`` writes it, escapes and all
    items = ['say "hi"', "cost $5", "back\\slash", "tick`", "two words"]
    quoted = " ".join("'" + i.replace("'", "'\\''") + "'" for i in items)
    printed = _bash(f"a=({quoted}); declare -p a").strip().split("=", 1)[1]
    value = unquote_array(printed)
    out = _bash(shell_prelude([COLORS], {"colors": value}) + 'printf "<%s>" "${colors[@]}"\n')
    assert out == "".join(f"<{i}>" for i in items), value


@pytest.mark.parametrize("name", [
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "GIT_SSH_COMMAND", "GIT_SSH", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_EXEC_PATH",
    "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0", "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_GLOBAL", "GIT_CONFIG", "LESSOPEN", "LESSCLOSE", "LUA_INIT", "LUA_INIT_5_4",
    "PAGER", "EDITOR", "DOTNET_STARTUP_HOOKS", "COR_PROFILER_PATH", "OPENSSL_CONF",
    "BASH_ENV", "ZDOTDIR",
    # Windows reads names in any case
    "PSModulePath", "PSMODULEPATH", "psmodulepath", "PsModulePath", "COMSPEC", "ComSpec",
    "comspec", "PATHEXT", "pathext", "pythonpath", "PythonStartup", "node_options",
    "java_tool_options", "git_ssh_command", "Git_Config_Count", "perl5shell",
    "Perl5Shell", "pythonbreakpoint", "PythonBreakpoint",
])
def test_names_that_run_or_load_code_are_reserved(name: str) -> None:
    assert is_reserved(name)
    with pytest.raises(JobError) as raised:
        check_name(name)
    assert raised.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
    assert f"{name!r} is reserved" in raised.value.message


@pytest.mark.parametrize("name", [
    "python_version", "perl_module", "path", "home", "user", "env", "shell", "tmpdir",
    "ps1", "ld_flags", "bash_version", "lessopen_hint", "git_branch", "GIT_BRANCH",
    "java_home", "JAVA_HOME", "LANG", "LC_ALL", "pager_size", "editor_name",
])
def test_harmless_names_stay_free(name: str) -> None:
    assert not is_reserved(name)
    assert check_name(name) == name

