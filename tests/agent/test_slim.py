"""The agent loads nothing of the server or of the operator's CLI."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_SIDE = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic", "typer",
               "rich", "click", "httpx", "cryptography", "yaml", "regex")


def loaded_by(*args: str) -> set[str]:
    """Top-level packages a fresh interpreter imported running ``args`` (``-X importtime``)."""
    run = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True,
                         text=True, timeout=60, check=False)
    names = set()
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_the_agent_command_line_imports_no_server_package() -> None:
    loaded = loaded_by("-m", "jobfleet", "agent", "--help")
    assert "jobfleet" in loaded and "argparse" in loaded
    assert not loaded & set(SERVER_SIDE), loaded & set(SERVER_SIDE)


def test_a_running_agent_imports_no_server_package() -> None:
    loaded = loaded_by("-c", "import jobfleet.agent.main, jobfleet.agent.connection")
    assert "websockets" in loaded and "jobfleet" in loaded
    assert not loaded & set(SERVER_SIDE), loaded & set(SERVER_SIDE)
    # loaded with the first job that acts for another account, not by an idle agent
    assert "ctypes" not in loaded


def test_the_protocol_module_needs_no_validator() -> None:
    loaded = loaded_by("-c", "import jobfleet.domain.protocol")
    assert "pydantic" not in loaded and "pydantic_core" not in loaded


# what an idle agent does not hold: proxies and HTTP of the library's own client, what
# importlib.metadata brings, the protocol's validator metadata, archive and IDNA codecs
IDLE_HEAVY = ("email", "urllib.request", "http.client", "zipfile", "csv", "annotated_types",
              "typing_extensions", "argparse", "gettext",
              "shutil", "encodings.idna", "websockets.asyncio", "websockets.proxy", "ctypes",
              # the file movers and the opt-in peer port load with their first use
              "jobfleet.agent.files", "jobfleet.agent.peers", "concurrent.futures.thread")
IDLE_PATH = """
import json, sys
from jobfleet.agent.lazy import defer_unused
from jobfleet.domain.typeddict import without_validation
defer_unused()
without_validation()
import jobfleet.agent.main, jobfleet.agent.connection
assert jobfleet.agent.main.plain_args(["--server", "http://127.0.0.1", "--state-dir", "/s",
                                      "--ip", "1"])
metadata = type(sys.modules["importlib.metadata"]).__name__
print(json.dumps({"modules": sorted(sys.modules), "metadata": metadata}))
"""


def test_the_idle_path_imports_none_of_the_heavy_modules() -> None:
    run = subprocess.run([sys.executable, "-I", "-c", IDLE_PATH], capture_output=True,
                         text=True, timeout=60, check=True)
    answer = json.loads(run.stdout)
    loaded = set(answer["modules"])
    assert "jobfleet.agent.wsclient" in loaded
    heavy = {m for m in loaded if any(m == h or m.startswith(h + ".") for h in IDLE_HEAVY)}
    assert not heavy, heavy
    # imported by websockets, not run until something reads it
    assert answer["metadata"] == "Deferred"


DEFERRED_USE = """
import sys
from jobfleet.agent.lazy import defer_unused
defer_unused()
import websockets.client
assert "email" not in sys.modules
import importlib.metadata
from importlib import metadata
from importlib.metadata import version
assert importlib.metadata.version("websockets") == version("websockets")
assert metadata.version("websockets") == websockets.__version__
assert type(sys.modules["importlib.metadata"]).__name__ == "module"
print("ok")
"""


def test_protocol_types_are_plain_typed_dicts_in_an_agent() -> None:
    code = ("import sys; from jobfleet.domain.typeddict import without_validation; "
            "without_validation(); from jobfleet.domain import protocol; "
            "assert protocol.hello(version='1', hostname='h', os='Linux', os_name='', ipv6='', "
            "labels={}, known=[], peer='', load=None)['t'] == 'hello'; "
            "print(type(protocol.Hello).__module__, 'typing_extensions' in sys.modules)")
    run = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.stdout.split() == ["typing", "False"], run.stderr


def test_a_deferred_module_works_when_it_is_used() -> None:
    run = subprocess.run([sys.executable, "-I", "-c", DEFERRED_USE], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.stdout.strip() == "ok", run.stderr
