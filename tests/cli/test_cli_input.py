"""File arguments that cannot be read end the command with a usage error, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from jobfleet.cli.main import app

if TYPE_CHECKING:
    from conftest import Cli, FakeServer

# (command before the file, after it): every command that reads a text file the operator names
COMMANDS = [
    (["template", "import"], []),
    (["topo", "group", "add", "g", "--filter"], ["@"]),
    (["run", "-H", "127.0.0.1", "--file"], []),
]


def _args(command: tuple[list[str], list[str]], path: str) -> list[str]:
    before, prefix = command
    return [*before, f"{prefix[0]}{path}" if prefix else path]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[0][:2]))
def test_unreadable_file_arguments_are_usage_errors(
    cli: Cli, server: FakeServer, tmp_path: Path, command: tuple[list[str], list[str]]
) -> None:
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00binary")
    cases = {
        str(tmp_path / "missing.yaml"): "No such file or directory",
        str(tmp_path): "Is a directory",
        str(binary): "is not UTF-8 text",
    }
    for path, why in cases.items():
        result = cli(*_args(command, path))
        assert result.exit_code == 2, (path, result.output)
        assert why in result.stderr, (path, result.stderr)
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert server.requests == []


def test_a_script_that_is_not_utf8_is_refused_with_where_why_and_what_to_do(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    """The server keeps a script as UTF-8 text: a latin-1 byte would run as U+FFFD, so
    the script is refused before it is sent, saying how to make it one that runs."""
    script = tmp_path / "caf\u00e9.sh"
    script.write_bytes(b"echo 'caf\xe9'\n")
    result = cli("run", "-H", "127.0.0.1", "--file", str(script))
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert "is not UTF-8 text (byte 0xe9 at offset 9)" in said, said
    assert "would not run as written" in said and "iconv -f latin1 -t utf-8" in said, said
    assert "Traceback" not in result.output
    assert server.requests == []


def test_script_bytes_that_are_not_utf8_are_refused_in_any_locale(tmp_path: Path) -> None:
    """In the C locale Python reads standard input and argv with surrogateescape: bytes
    that are not UTF-8 got through to the request's encoding, a traceback."""
    base = [sys.executable, "-m", "jobfleet", "--server", "http://127.0.0.1:9",
            "--app-code", "a", "--app-secret", "s", "run", "-H", "127.0.0.1"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:surrogateescape", "LC_ALL": "C",
           "COLUMNS": "200"}
    for args, stdin, said in (
        ([*base, "--file", "-"], b"echo 'caf\xe9'\n",
         "standard input is not UTF-8 text (byte 0xe9 at offset 9)"),
        ([*base, "-c", b"echo 'caf\xe9'"], b"", "the command is not UTF-8 text"),
    ):
        done = subprocess.run(args, input=stdin, capture_output=True, env=env, timeout=60,
                              check=False)
        err = " ".join(done.stderr.decode("utf-8", "replace").split())
        assert done.returncode == 2, err
        assert said in err and "would not run as written" in err, err
        assert "Traceback" not in err, err


def test_binary_on_standard_input_is_a_usage_error(cli: Cli, server: FakeServer) -> None:
    result = cli.runner.invoke(
        app,
        ["--app-code", "a", "--app-secret", "s", "template", "import", "-"],
        input=b"\xff\xfe",
    )
    assert result.exit_code == 2, result.output
    assert "standard input is not UTF-8 text" in result.stderr


def test_a_config_file_that_is_not_text_exits_2(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe")
    result = cli.bare("--config", str(path), "hosts")
    assert result.exit_code == 2, result.output
    assert "is not valid TOML" in result.stderr


@pytest.mark.parametrize(
    ("args", "instead"),
    [
        (["admin", "user", "passwd", "alice"], "--stdin"),
        (["notify", "webhook", "http://127.0.0.1:9/x", "--on", "failed"],
         "JOBFLEET_NOTIFY_SECRET"),
        (["heal", "create", "restart", "--plan", "1"], "JOBFLEET_HEAL_SECRET"),
    ],
)
def test_a_secret_prompt_whose_input_ends_is_a_usage_error(
    cli: Cli, server: FakeServer, args: list[str], instead: str
) -> None:
    """Run from a script with nothing on standard input, a prompt for a secret ended as
    "Aborted." with exit status 1, which means a failed job; it is a usage error that
    says how to give the secret without a terminal, and nothing is sent."""
    result = cli(*args, input="")
    assert result.exit_code == 2, result.output
    assert "standard input ended" in result.stderr and instead in result.stderr, result.stderr
    assert server.admin_requests() == []


def test_ctrl_c_at_a_secret_prompt_is_an_interruption(
    cli: Cli, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    def interrupted(*args: object, **kw: object) -> str:
        # as the prompt ends on Ctrl-C: Abort raised while handling KeyboardInterrupt
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise typer.Abort() from None

    monkeypatch.setattr(typer, "prompt", interrupted)
    assert cli("admin", "user", "passwd", "alice").exit_code == 130
    assert server.admin_requests() == []


def test_a_script_on_standard_input_ends_its_lines_as_a_file_does(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    """A script saved on Windows ends its lines with CRLF: read from a file its line
    ends were made LF (as the console's text box makes them), read from standard input
    they were sent as they were, and the agent's shell stopped at "$'\\r': command not
    found". Both ways send the same script now."""
    import base64

    script = "echo one\r\necho two\r\n"
    path = tmp_path / "crlf.sh"
    path.write_bytes(script.encode())
    sent = []
    for args, stdin in ((["--file", str(path)], None), (["--file", "-"], script)):
        result = cli.runner.invoke(
            app, ["--app-code", "a", "--app-secret", "s", "run", "-H", "127.0.0.1", *args],
            input=None if stdin is None else stdin.encode())
        assert result.exit_code == 0, result.output
        sent.append(base64.b64decode(server.submitted["script_content"]).decode())
        server.submitted = {}
    assert sent == ["echo one\necho two\n"] * 2, sent
