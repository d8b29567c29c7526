"""What a server that does not need them never loads: the Redis client (a node of a
cluster only), botocore (S3 file sources only), Alembic (a schema to upgrade only),
httpx (callbacks, webhooks and file sources only) and the operator's CLI around the
``server`` command (its API client). Each stays in memory for the life of the process
once imported."""

from __future__ import annotations

import subprocess
import sys

from jobfleet import __version__

LAZY = ("redis", "botocore", "alembic", "httpx", "jobfleet.sdk")

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
