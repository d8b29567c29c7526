"""File arguments that cannot be read end the command with a usage error, not a traceback."""

from __future__ import annotations

import base64
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
]
# ``run --file`` reads a script: any bytes, so only a file that cannot be read is refused
RUN = (["run", "-H", "127.0.0.1", "--file"], [])


def _args(command: tuple[list[str], list[str]], path: str) -> list[str]:
    before, prefix = command
    return [*before, f"{prefix[0]}{path}" if prefix else path]


@pytest.mark.parametrize("command", [*COMMANDS, RUN], ids=lambda c: " ".join(c[0][:2]))
def test_unreadable_file_arguments_are_usage_errors(
    cli: Cli, server: FakeServer, tmp_path: Path, command: tuple[list[str], list[str]]
) -> None:
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00binary")
    cases = {
        str(tmp_path / "missing.yaml"): "No such file or directory",
        str(tmp_path): "Is a directory",
    }
    if command != RUN:
        cases[str(binary)] = "is not UTF-8 text"
    for path, why in cases.items():
        result = cli(*_args(command, path))
        assert result.exit_code == 2, (path, result.output)
        assert why in result.stderr, (path, result.stderr)
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert server.requests == []


def test_a_script_that_is_not_utf8_is_sent_as_its_bytes(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    """The server runs a script's bytes as they are: a GBK ``.bat`` or a Latin-1 shell
    script goes as written, its CRLF line ends included."""
    script = tmp_path / "caf\u00e9.sh"
    script.write_bytes(b"echo 'caf\xe9' \xd6\xd0\r\n")
    result = cli("run", "-H", "127.0.0.1", "--file", str(script))
    assert result.exit_code == 0, result.output
    sent = base64.b64decode(server.submitted["script_content"])
    assert sent == b"echo 'caf\xe9' \xd6\xd0\r\n", sent


def test_script_bytes_that_are_not_utf8_are_sent_in_any_locale(tmp_path: Path) -> None:
    """In the C locale Python reads standard input and argv with surrogateescape: bytes
    that are not UTF-8 reach the request as themselves, never a traceback."""
    base = [sys.executable, "-m", "jobfleet", "--server", "http://127.0.0.1:9",
            "--app-code", "a", "--app-secret", "s", "run", "-H", "127.0.0.1"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:surrogateescape", "LC_ALL": "C",
           "COLUMNS": "200"}
    for args, stdin in (
        ([*base, "--file", "-"], b"echo 'caf\xe9'\n"),
        ([*base, "-c", b"echo 'caf\xe9'"], b""),
    ):
        done = subprocess.run(args, input=stdin, capture_output=True, env=env, timeout=60,
                              check=False)
        err = " ".join(done.stderr.decode("utf-8", "replace").split())
        # nothing listens on port 9: the script was read and the request built
        assert "cannot connect to http://127.0.0.1:9" in err, err
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


def test_a_script_keeps_its_line_ends_from_a_file_and_from_standard_input(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    """A ``.bat`` saved on Windows ends its lines with CRLF, which cmd needs for some
    constructs, and a UTF-16 script's ``\\r`` byte may be half of a character: read from
    a file or from standard input, the script is sent as written."""
    import base64

    script = b"@echo off\r\necho one\r\n\xff\xfee\x00\r\x00\n\x00"
    path = tmp_path / "crlf.bat"
    path.write_bytes(script)
    sent = []
    for args, stdin in ((["--file", str(path)], None), (["--file", "-"], script)):
        result = cli.runner.invoke(
            app, ["--app-code", "a", "--app-secret", "s", "run", "-H", "127.0.0.1", *args],
            input=stdin)
        assert result.exit_code == 0, result.output
        sent.append(base64.b64decode(server.submitted["script_content"]))
        server.submitted = {}
    assert sent == [script] * 2, sent


def test_a_parameter_that_is_not_utf8_is_a_usage_error_in_any_locale() -> None:
    """The server keeps ``script_param`` as text and refuses other bytes: the CLI says so
    before sending, naming the byte, instead of a traceback from encoding the request."""
    args = [sys.executable, "-m", "jobfleet", "--server", "http://127.0.0.1:9",
            "--app-code", "a", "--app-secret", "s", "run", "-H", "127.0.0.1", "-c", "echo",
            "-p", b"x caf\xe9"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:surrogateescape", "LC_ALL": "C",
           "COLUMNS": "200"}
    done = subprocess.run(args, capture_output=True, env=env, timeout=60, check=False)
    err = " ".join(done.stderr.decode("utf-8", "replace").split())
    assert done.returncode == 2, err
    assert "the parameter is not UTF-8 text (byte 0xe9 at offset 5)" in err, err
    assert "Traceback" not in err, err


def test_a_shell_script_with_crlf_line_ends_is_sent_with_a_warning(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    """A shell script saved on Windows is sent as written too, but a shell on the host
    would fail at each line's ``\\r``: the operator is told here, once; a ``.bat`` is not
    warned about."""
    for name, warned in (("crlf.sh", True), ("crlf.bat", False)):
        path = tmp_path / name
        path.write_bytes(b"echo one\r\necho two\r\n")
        result = cli("run", "-H", "127.0.0.1", "--file", str(path))
        assert result.exit_code == 0, result.output
        assert base64.b64decode(server.submitted["script_content"]) == path.read_bytes()
        assert ("CRLF line ends" in result.stderr) is warned, result.stderr
        server.submitted = {}
