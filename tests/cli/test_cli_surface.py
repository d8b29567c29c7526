"""The whole command tree: every command that prints data can print it as JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from jobfleet.cli.daemons import say_defaults
from jobfleet.cli.main import app

# commands that print no data of their own: daemons run until stopped, ``demo`` drives
# a whole fleet, ``template export`` prints the template's own YAML document
NO_JSON = {"server", "agent", "demo", "template export"}


def leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield " ".join(path), command
        return
    for name, sub in subcommands.items():
        yield from leaves(sub, (*path, name))


def test_every_command_that_prints_data_takes_json() -> None:
    commands = dict(leaves(typer.main.get_command(app)))
    assert len(commands) > 60
    missing = [
        name
        for name, command in commands.items()
        if name not in NO_JSON and not any("--json" in p.opts for p in command.params)
    ]
    assert missing == []
    # the allow-list names real commands, so it cannot hide a renamed one
    assert set(commands) >= NO_JSON


def test_targeting_options_wherever_hosts_are_named() -> None:
    commands = dict(leaves(typer.main.get_command(app)))
    for name in ("run", "push", "fetch"):
        opts = {o for p in commands[name].params for o in p.opts}
        assert {"--host", "--host-id", "--group", "--module", "--set", "--label"} <= opts, name


def test_help_texts_survive_rich_markup() -> None:
    # --help renders each text as Rich markup: a bracketed word such as [lists] vanished
    from rich.text import Text

    commands = dict(leaves(typer.main.get_command(app)))
    lost = []
    for name, command in commands.items():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in texts:
            if Text.from_markup(text).plain != text.replace("\\[", "["):
                lost.append((name, text))
    assert lost == []


def test_each_summary_in_the_command_lists_is_one_line() -> None:
    """``jobfleet --help`` lists each command with its help's first paragraph as written,
    line breaks included: a summary broken in its docstring came out broken mid-phrase."""

    def every(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
        yield " ".join(path), command
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from every(sub, (*path, name))

    broken = [
        (name, summary)
        for name, command in every(typer.main.get_command(app))
        if "\n" in (summary := (command.short_help or command.help or "").split("\n\n")[0].strip())
    ]
    assert broken == []


def test_every_command_has_its_annotations_evaluated() -> None:
    # typer evaluates a command's string annotations each time it builds the tree, for
    # every command at every start: they are evaluated once, when the app is assembled
    def callbacks(group: typer.Typer, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
        for info in group.registered_commands:
            yield " ".join((*path, info.name or info.callback.__name__)), info.callback
        if group.registered_callback is not None:
            yield " ".join(path) or "jobfleet", group.registered_callback.callback
        for sub in group.registered_groups:
            assert sub.typer_instance is not None
            yield from callbacks(sub.typer_instance, (*path, sub.name or ""))

    found = dict(callbacks(app))
    assert len(found) > 60
    strings = [
        name
        for name, callback in found.items()
        if any(isinstance(a, str) for a in callback.__annotations__.values())
    ]
    assert strings == []


def test_server_takes_dash_h_as_every_other_command_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # ``jobfleet server`` runs through a Typer app of its own (``jobfleet.__main__``)
    from jobfleet.cli.daemons import server_main

    with pytest.raises(SystemExit) as exit_info:
        server_main(["-h"])
    assert exit_info.value.code == 0
    assert "Usage: jobfleet server" in capsys.readouterr().out


def test_every_option_and_argument_has_a_help_text() -> None:
    # --help lists an option without one as its bare name: the reader is left to guess
    commands = dict(leaves(typer.main.get_command(app)))
    bare = [
        (name, param.name)
        for name, command in commands.items()
        for param in command.params
        if not getattr(param, "help", None) and not getattr(param, "hidden", False)
    ]
    assert bare == []


def test_the_step_commands_summary_names_every_operation() -> None:
    from jobfleet.cli.jobs import STEP_OPERATIONS

    commands = dict(leaves(typer.main.get_command(app)))
    words = (commands["step"].help or "").split("\n\n")[0].replace(",", " ").rstrip(".").split()
    assert [op for op in STEP_OPERATIONS if op not in words] == []


def test_the_server_options_say_their_defaults_and_say_them_right(tmp_path: Path) -> None:
    """``jobfleet server --help`` is where an operator looks a default up: every option
    with a number for a default names it, and names the one the server uses."""
    from jobfleet import server_config

    defaults = server_config.load(None, {"--data-dir": tmp_path})
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    commands = dict(leaves(typer.main.get_command(app)))
    shown = CliRunner().invoke(app, ["server", "--help"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and "{default" not in shown.stdout, shown.stdout
    # what --help writes into the options' help before it shows them
    say_defaults(commands["server"].params)
    unsaid, wrong = [], []
    for param in commands["server"].params:
        key = server_config.FLAGS.get(param.opts[0])
        if key is None or key.startswith("smtp.") or param.hidden:
            continue
        value: Any = defaults
        for part in key.split("."):
            value = getattr(value, part, None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        said = re.search(r"\bdefault (\d+(?:\.\d+)?)([smhd]?)\b", param.help or "")
        if said is None:
            unsaid.append(param.opts[0])
        elif float(said.group(1)) * units[said.group(2)] != value:
            wrong.append((param.opts[0], said.group(0), value))
    assert unsaid == []
    assert wrong == []


def test_arguments_are_named_in_capitals_in_every_usage_line() -> None:
    # as the docs write them (jobfleet status JOB, template export ID), and one way only
    commands = dict(leaves(typer.main.get_command(app)))
    odd = [
        (name, param.name, param.metavar)
        for name, command in commands.items()
        for param in command.params
        if param.param_type_name == "argument"
        and not (param.metavar and re.fullmatch(r"[A-Z][A-Z_]*", param.metavar))
    ]
    assert odd == []


def test_help_into_a_closed_pipe_ends_as_a_pipeline_stage_does(tmp_path: Path) -> None:
    """``jobfleet run --help | head -1``: as ``logs`` into a closed pipe, killed by SIGPIPE
    (the shell says 141), not status 1, which means "the job failed"."""
    import os
    import signal
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        for args in (["run", "--help"], ["--help"], ["server", "--help"]):
            done = subprocess.run(
                [sys.executable, "-m", "jobfleet", *args],
                stdout=write_end, stderr=subprocess.PIPE, timeout=60, check=False,
                env={**os.environ, "COLUMNS": "100"}, cwd=tmp_path,
            )
            assert done.returncode == -signal.SIGPIPE, (args, done.returncode, done.stderr)
            assert b"Traceback" not in done.stderr
    finally:
        os.close(write_end)
