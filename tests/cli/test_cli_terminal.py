"""Text from hosts and the server reaches the operator's terminal shown, never obeyed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console

from jobfleet.cli import jobs
from jobfleet.cli._context import make_console
from jobfleet.cli._terminal import printable

if TYPE_CHECKING:
    from conftest import Cli, FakeServer

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;pwned\x07"


def test_printable_writes_out_control_characters_but_tab_and_newline() -> None:
    assert printable("plain\ttext\n") == "plain\ttext\n"
    assert printable(f"a{CLEAR}b") == "a\\u001b[2Jb"
    assert printable("bell\x07 del\x7f csi\x9b") == "bell\\u0007 del\\u007f csi\\u009b"
    assert printable("windows\r\nline\rover") == "windows\nline\\u000dover"
    # the written-out form is JSON's own: a JSON text stays valid and means the same
    line = printable(json.dumps({"log": "x\x9by"}, ensure_ascii=False))
    assert json.loads(line) == {"log": "x\x9by"}


def test_a_host_name_cannot_drive_the_terminal(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/hosts")] = [
        {"bk_host_id": 1, "ip": "127.0.0.1", "hostname": f"web{CLEAR}{TITLE}", "alive": True}
    ]
    result = cli("hosts")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    assert "web\\u001b[2J\\u001b]0;pwned" in result.stdout


def test_logs_show_escape_sequences_on_a_terminal(cli: Cli, server: FakeServer) -> None:
    server.hosts[0].log = f"before{CLEAR}after{TITLE}\n"
    # FORCE_COLOR: Rich takes standard output for a terminal
    result = cli("logs", "77", env={"FORCE_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert CLEAR not in result.stdout and "\x1b]0;" not in result.stdout
    assert "before\\u001b[2Jafter\\u001b]0;pwned" in result.stdout

    one = cli("logs", "77", "--host", "127.0.0.1", env={"FORCE_COLOR": "1"})
    assert one.exit_code == 0, one.output
    assert one.stdout == "before\\u001b[2Jafter\\u001b]0;pwned\\u0007\n"


def test_logs_of_one_host_stay_raw_in_a_pipe(cli: Cli, server: FakeServer) -> None:
    server.hosts[0].log = f"raw{CLEAR}\n"
    result = cli("logs", "77", "--host", "127.0.0.1")
    assert result.stdout == f"raw{CLEAR}\n"


def test_server_names_are_not_rich_markup(cli: Cli, server: FakeServer) -> None:
    # a closing tag that opens nothing made Rich raise; an opening one was swallowed
    server.admin_answers[("POST", "/users")] = {"username": "[/x] [bold]y"}
    result = cli("admin", "user", "create", "z")
    assert result.exit_code == 0, result.output
    assert result.stdout == "user [/x] [bold]y: user\n"


class _Events:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events

    def events(self, job: int, *, hosts: str) -> Iterator[dict[str, Any]]:
        yield from self._events


def _follow(console: Console, json_out: bool = False) -> str:
    output = {"bk_host_id": 1, "ip": "127.0.0.1", "content": f"a{CLEAR}b\npart{TITLE}"}
    client = _Events(
        [
            {"event": "output", "id": "1", "data": output},
            {"event": "end", "id": "2", "data": {"status": 3}},
        ]
    )
    jobs.follow(client, 77, console, json_out)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def test_follow_shows_escape_sequences_on_a_terminal() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert _follow(terminal) == ("127.0.0.1: a\\u001b[2Jb\n127.0.0.1: part\\u001b]0;pwned\\u0007\n")
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert _follow(pipe) == f"127.0.0.1: a{CLEAR}b\n127.0.0.1: part{TITLE}\n"


def test_follow_json_lines_carry_no_raw_control_characters() -> None:
    text = _follow(Console(file=io.StringIO(), force_terminal=True), json_out=True)
    assert "\x1b" not in text and "\x07" not in text
    first = json.loads(text.splitlines()[0])
    assert first["data"]["content"] == f"a{CLEAR}b\npart{TITLE}"


def test_styles_still_reach_the_terminal(monkeypatch: Any) -> None:
    # the console's own styling is not text from a host: it still goes out
    monkeypatch.setenv("FORCE_COLOR", "1")
    console = make_console(stderr=True)
    console.file = io.StringIO()
    console.print("[not markup]", style="red")
    written = console.file.getvalue()
    assert "[not markup]" in written and "\x1b[31m" in written


def test_follow_takes_crlf_for_a_line_end_on_a_terminal() -> None:
    client = _Events(
        [
            {
                "event": "output",
                "id": "1",
                "data": {"bk_host_id": 1, "ip": "127.0.0.1", "content": "dir\r\nok\r\n"},
            },
            {"event": "end", "id": "2", "data": {"status": 3}},
        ]
    )
    terminal = Console(file=io.StringIO(), force_terminal=True)
    jobs.follow(client, 77, terminal)
    assert isinstance(terminal.file, io.StringIO)
    assert terminal.file.getvalue() == "127.0.0.1: dir\n127.0.0.1: ok\n"
