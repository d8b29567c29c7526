"""What a server that does not need them never loads: the Redis client (a node of a
cluster only), botocore (S3 file sources only), Alembic (a schema to upgrade only),
httpx (callbacks, webhooks and file sources only), Jinja2 (a console page only), the
Swagger UI bundle (the /docs page only), PyYAML (a template's export or import only)
and the operator's CLI around the ``server`` command (its API client). Each stays in
memory for the life of the process once imported."""

from __future__ import annotations

import subprocess
import sys

from jobfleet import __version__

LAZY = (
    "redis", "botocore", "alembic", "httpx", "jinja2", "swagger_ui_bundle", "yaml",
    "jobfleet.sdk",
)

# ``jobfleet server --version`` through the program's entry point, then the server
# module as the command loads it to run
RUN = f"""
import sys
from jobfleet.__main__ import main
sys.argv = ["jobfleet", "server", "--version"]
try:
    main()
except SystemExit:
    pass
import jobfleet.server
print(sorted(m for m in {LAZY!r} if m in sys.modules))
"""


def test_the_server_command_loads_none_of_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines() == [f"jobfleet {__version__}", "[]"]


# The operator's CLI starts a command without what only other commands need: the async
# client (and asyncio under it), the host-filter grammar (topo's --where), rich's
# progress bars (a terminal only); ``--help`` without the API client and httpx at all.
CLI_NEEDLESS = (
    "asyncio",
    "jobfleet.sdk._async_client",
    "jobfleet.domain.host_filters",
    "rich.progress",
)
HELP_NEEDLESS = (*CLI_NEEDLESS, "httpx", "jobfleet.sdk._client")

# one command through the program's entry point, then what it left in sys.modules
CLI_RUN = """
import sys
from jobfleet.__main__ import main
sys.argv = ["jobfleet", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(sorted(m for m in {needless!r} if m in sys.modules))
"""


def _loaded_by(needless: tuple[str, ...], *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CLI_RUN.format(needless=needless), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()[-1:]


def test_a_cli_command_loads_only_what_it_needs() -> None:
    # nothing listens on port 9 of loopback: the command gets as far as its first request
    loaded = _loaded_by(
        CLI_NEEDLESS,
        "--server",
        "http://127.0.0.1:9",
        "--app-code",
        "app",
        "--app-secret",
        "secret",
        "run",
        "-c",
        "echo",
        "--host",
        "127.0.0.1",
        "--json",
    )
    assert loaded == ["[]"]


def test_cli_help_loads_no_api_client() -> None:
    assert _loaded_by(HELP_NEEDLESS, "--help") == ["[]"]
    assert _loaded_by(HELP_NEEDLESS, "run", "--help") == ["[]"]
