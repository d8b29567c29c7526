"""``template import``: the command it suggests after a clash runs as it is pasted."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Cli, FakeServer

DOC = "name: web deploy\nsteps: []\n"


@pytest.mark.parametrize(
    "name", ["tpl.yaml", "my template.yaml", "it's here.yaml", "-dash.yaml", "$(touch x).yaml"]
)
def test_the_import_hint_is_quoted_to_be_pasted(
    cli: Cli, server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(DOC)
    sent: list[httpx.Request] = []
    answer = server.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/templates/import"):
            sent.append(request)
            if request.url.params.get("update") != "true":
                return httpx.Response(200, json={
                    "result": False, "code": 1249409,
                    "message": "A template named 'web deploy' exists: update=true replaces it"})
            return server.ok({"created": False, "template": {"id": 4, "name": "web deploy"},
                              "plans": []})
        return answer(request)

    server.handle = handle  # type: ignore[method-assign]
    first = cli("template", "import", "--biz", "3", "--", name)
    assert first.exit_code == 2, first.output
    [hint] = [line for line in first.output.splitlines() if "--update replaces it: " in line]
    command = hint.split("--update replaces it: ", 1)[1]
    args = shlex.split(command)
    assert args[0] == "jobfleet" and args[-1] == name, command
    again = cli(*args[1:])
    assert again.exit_code == 0, (command, again.output)
    assert "updated template 4" in again.stdout
    assert [r.content.decode() for r in sent] == [DOC, DOC]
    assert [r.url.params.get("update") for r in sent] == [None, "true"]
    assert all("/businesses/3/" in r.url.path or r.url.params.get("bk_biz_id") == "3"
               for r in sent), [str(r.url) for r in sent]


def test_the_hint_for_stdin_reads_stdin_again(cli: Cli, server: FakeServer) -> None:
    server.errors["/templates/import"] = (1249409, "exists: update=true replaces it")
    result = cli("template", "import", "-", input=DOC)
    assert result.exit_code == 2, result.output
    assert "--update replaces it: jobfleet template import --update -\n" in result.output
