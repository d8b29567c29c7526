"""What a server that does not need them never loads: the Redis client (a node of a
cluster only), botocore (S3 file sources only) and Alembic (a schema to upgrade only).
Each stays in memory for the life of the process once imported."""

from __future__ import annotations

import subprocess
import sys

LAZY = ("redis", "botocore", "alembic")


def test_the_server_module_loads_none_of_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys, jobfleet.server, jobfleet.cli.main\n"
         f"print(sorted(m for m in {LAZY!r} if m in sys.modules))"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert done.stdout.strip() == "[]"
