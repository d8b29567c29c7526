"""scripts/pg-cluster.sh: a start that fails leaves nothing behind for the next one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg-cluster.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("made", [True, False], ids=["dir-made-by-start", "dir-given-empty"])
def test_a_start_refused_for_permissions_cleans_up_after_itself(
    tmp_path: Path, made: bool
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the permission check only applies when run as root")
    if run("bindir").returncode != 0:
        pytest.skip("no PostgreSQL server binaries")
    # a parent the cluster's OS user cannot enter
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    target = closed / "db"
    if not made:
        target.mkdir()
    for _ in range(2):
        started = run("start", str(target))
        assert started.returncode != 0, started.stdout
        # the same reason both times: the second start is not told the directory is in use
        assert "cannot write to" in started.stderr, started.stderr
        if made:
            assert not target.exists()
        else:
            assert list(target.iterdir()) == []
