"""An agent's hold on its key: what a remover may take, and where the locks may live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobfleet.agent import liveness


def test_a_held_key_is_not_seized_and_a_released_one_is(tmp_path: Path) -> None:
    locks = tmp_path / "run"
    held = liveness.hold("agent-a", locks)
    twin = liveness.hold("agent-a", locks)  # the same work directory twice
    assert liveness.seize("agent-a", locks) is None
    os.close(held)
    assert liveness.seize("agent-a", locks) is None
    os.close(twin)
    seized = liveness.seize("agent-a", locks)
    assert seized is not None
    liveness.let_go(seized, "agent-a", locks, forget=True)
    assert not (locks / "agent-a.lock").exists()
    # after the remover forgot it, an agent takes a fresh file, and holds it
    held = liveness.hold("agent-a", locks)
    try:
        assert (locks / "agent-a.lock").exists()
        assert liveness.seize("agent-a", locks) is None
    finally:
        os.close(held)


def test_locks_live_only_in_a_directory_no_one_else_may_write(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(liveness.UnsafeDirectory):
        liveness.hold("agent-a", open_dir)
    assert liveness.seize("agent-a", open_dir) is None
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    with pytest.raises(liveness.UnsafeDirectory):
        liveness.hold("agent-a", link)
    with pytest.raises(ValueError):
        liveness.hold("../agent-a", tmp_path / "run")
