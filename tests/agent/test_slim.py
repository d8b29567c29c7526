"""The agent loads nothing of the server or of the operator's CLI."""

from __future__ import annotations

import subprocess
import sys

SERVER_SIDE = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic", "typer",
               "rich", "click", "httpx", "cryptography", "yaml")


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
