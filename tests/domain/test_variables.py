"""The bash prelude that declares a step's variables: a value is data, never code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobfleet.domain.status import VariableType
from jobfleet.domain.variables import Variable, shell_prelude, unquote_array

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
