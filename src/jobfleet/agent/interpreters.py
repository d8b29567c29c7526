"""Finding the interpreter that runs a script of each language on this host."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from jobfleet.domain.status import ScriptLanguage

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


_SYSTEM_PYTHONS = ("/usr/bin/python3",)


# --- interpreters -------------------------------------------------------------------


@dataclass(frozen=True)
class _Language:
    name: str
    ext: str
    # (program, flags placed before the script path), in order of preference
    programs: tuple[tuple[str, tuple[str, ...]], ...]
    # the interpreter insists on a real path with the extension (pwsh -File does)
    needs_file: bool = False


LANGUAGES: dict[int, _Language] = {
    # --noprofile/--norc: a task must not depend on, or be slowed by, rc files
    ScriptLanguage.SHELL: _Language(
        "shell", ".sh", (("bash", ("--noprofile", "--norc")), ("sh", ()))
    ),
    ScriptLanguage.BAT: _Language("bat", ".bat", ()),
    ScriptLanguage.PERL: _Language("perl", ".pl", (("perl", ()),)),
    ScriptLanguage.PYTHON: _Language(
        "python", ".py", (("python3", ()), ("python", ()), ("python2", ()))
    ),
    ScriptLanguage.POWERSHELL: _Language(
        "powershell",
        ".ps1",
        (("pwsh", ("-NoProfile", "-NonInteractive", "-File")),),
        needs_file=True,
    ),
    ScriptLanguage.SQL: _Language("sql", ".sql", ()),
}


def find_interpreter(lang: int) -> list[str] | None:
    """The argv prefix that runs a script of ``lang``, or None if this host lacks it."""
    found = _lookup_interpreter(lang, os.environ.get("PATH") or DEFAULT_PATH)
    return list(found) if found is not None else None


@functools.cache
def _lookup_interpreter(lang: int, search_path: str) -> tuple[str, ...] | None:
    language = LANGUAGES.get(lang)
    if language is None or not language.programs:
        return None
    dirs = [d for d in search_path.split(os.pathsep) if d]
    if lang == ScriptLanguage.PYTHON:
        python = _resolve_python(dirs, _SYSTEM_PYTHONS, sys.executable)
        return (python,) if python else None
    shims: list[tuple[str, tuple[str, ...]]] = []
    for program, flags in language.programs:
        real, shim = _which(program, dirs)
        if real:
            return (real, *flags)
        if shim:
            shims.append((shim, flags))
    return (shims[0][0], *shims[0][1]) if shims else None


def _resolve_python(dirs: Sequence[str], system: Sequence[str], running: str) -> str | None:
    """Pick a Python binary, avoiding version-manager shims that add ~85 ms per start."""
    for path in system:
        if _is_executable(path):
            return path
    shim_found: str | None = None
    for program, _ in LANGUAGES[ScriptLanguage.PYTHON].programs:
        real, shim = _which(program, dirs)
        if real:
            return real
        shim_found = shim_found or shim
    if shim_found is None:
        return None
    # only shims: the shim would pick the same kind of interpreter the agent runs on;
    # the resolved binary ignores the agent's virtualenv, so scripts don't see its packages
    target = os.path.realpath(running) if running else ""
    return target if target and _is_executable(target) else shim_found


def _which(program: str, dirs: Sequence[str]) -> tuple[str | None, str | None]:
    """First real binary and first shim named ``program`` along ``dirs``."""
    shim: str | None = None
    for directory in dirs:
        path = os.path.join(directory, program)
        if not _is_executable(path):
            continue
        if _is_shim_dir(directory):
            shim = shim or path
            continue
        return path, shim
    return None, shim


def _is_shim_dir(directory: str) -> bool:
    # pyenv, pyenv-virtualenv, rbenv, plenv and asdf all put wrappers in a "shims" dir
    return os.path.basename(os.path.normpath(directory)) == "shims"


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def missing_interpreter_message(lang: int) -> str:
    language = LANGUAGES.get(lang)
    if language is None:
        return f"jobfleet-agent: unknown script language {lang}"
    if not language.programs:
        return f"jobfleet-agent: {language.name} scripts cannot run on this host"
    looked_for = ", ".join(program for program, _ in language.programs)
    return (
        f"jobfleet-agent: no interpreter for {language.name} on this host (looked for {looked_for})"
    )
