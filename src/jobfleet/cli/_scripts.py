"""What ``jobfleet run`` sends: the script text and its bk-job language number."""

from __future__ import annotations

import codecs
from pathlib import Path

import typer

from jobfleet.cli._input import read_script
from jobfleet.sdk import ScriptLanguage

LANGUAGE_NAMES: dict[str, ScriptLanguage] = {
    "shell": ScriptLanguage.SHELL,
    "sh": ScriptLanguage.SHELL,
    "bash": ScriptLanguage.SHELL,
    "bat": ScriptLanguage.BAT,
    "perl": ScriptLanguage.PERL,
    "python": ScriptLanguage.PYTHON,
    "powershell": ScriptLanguage.POWERSHELL,
}
EXTENSIONS: dict[str, ScriptLanguage] = {
    ".py": ScriptLanguage.PYTHON,
    ".pl": ScriptLanguage.PERL,
    ".ps1": ScriptLanguage.POWERSHELL,
    ".bat": ScriptLanguage.BAT,
    ".cmd": ScriptLanguage.BAT,
}
RUNNABLE = (
    ScriptLanguage.SHELL,
    ScriptLanguage.BAT,
    ScriptLanguage.PERL,
    ScriptLanguage.PYTHON,
    ScriptLanguage.POWERSHELL,
)


def parse_language(value: str) -> ScriptLanguage:
    """A language by name (``shell``, ``python``…) or bk-job number (1-5)."""
    text = value.strip().lower()
    if text.isdecimal() and int(text) in {int(lang) for lang in RUNNABLE}:
        return ScriptLanguage(int(text))
    if text in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[text]
    names = ", ".join(sorted(set(LANGUAGE_NAMES) - {"sh", "bash"}))
    raise typer.BadParameter(f"{value!r}: use one of {names} or 1-5", param_hint="--lang")


def language_for(path: str) -> ScriptLanguage:
    return EXTENSIONS.get(Path(path).suffix.lower(), ScriptLanguage.SHELL)


def check_param(param: str) -> None:
    """Refuse a ``--param`` that is not UTF-8 here, as the server would (a parameter is
    kept as text), rather than fail encoding the request."""
    try:
        param.encode("utf-8")
    except UnicodeEncodeError as exc:
        # bytes of the command line that are not UTF-8 come in as lone surrogates
        raise typer.BadParameter(
            f"the parameter is not UTF-8 text (byte 0x{ord(param[exc.start]) - 0xDC00:02x} "
            f"at offset {len(param[: exc.start].encode('utf-8', 'surrogateescape'))}): "
            "the server keeps a parameter as text; convert it to UTF-8",
            param_hint="--param",
        ) from None


def load_script(
    command: str | None, file: str | None, lang: str | None
) -> tuple[bytes, ScriptLanguage]:
    """The script's bytes from ``-c`` or ``--file`` (``-`` reads stdin) and its language.

    The host runs exactly these bytes, whatever their encoding (a GBK ``.bat``)."""
    if command is not None and file is None:
        # bytes of the command line that are not UTF-8 come in as lone surrogates
        script = command.encode("utf-8", errors="surrogateescape")
    elif file is not None and command is None:
        script = read_script(file, "--file")
    else:
        raise typer.BadParameter("give exactly one of -c/--command or --file", param_hint="-c")
    if not script:
        # refused here: the server's refusal speaks of the API's script fields
        hint = "-c" if file is None else "--file"
        raise typer.BadParameter("the script is empty: give the commands to run", param_hint=hint)
    if lang is not None:
        language = parse_language(lang)
    elif file is None or file == "-":
        language = ScriptLanguage.SHELL
    else:
        language = language_for(file)
    if language == ScriptLanguage.SHELL and b"\r\n" in script and not script.startswith(
        (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    ):
        # sent as written, as a .bat needs; a shell would fail on each line's \r far from
        # here, on every host
        typer.echo(
            "warning: the script has CRLF line ends; a shell on the host reads each \\r as "
            "part of its line (convert it with dos2unix)",
            err=True,
        )
    return script, language
