"""The root a download item names: the operator's target path the agent follows, below
which it follows no symlink."""

from __future__ import annotations

from datetime import datetime

from jobfleet.domain.paths import LOCAL_SOURCE, source_label
from jobfleet.engine.file_gathering import Prepared
from jobfleet.engine.files import target_file, target_root

WHEN = datetime(2026, 12, 7, 10, 30)
PATH = "/data/[FILESRCIP]/[DATEFMT:%Y%m%d]/"


def prepared(label: str, rel: str, host: int | None = 7) -> Prepared:
    return Prepared(label, host, "127.0.0.9" if host else None, 0 if host else None,
                    "/src/top/" + rel, rel, False, 0o644)


def test_the_root_is_the_expanded_target_path() -> None:
    item = prepared(source_label(0, "127.0.0.9"), "top/sub/x.conf")
    dest = target_file(PATH, item, None, WHEN, False)
    assert dest == "/data/0_127.0.0.9/20261207/top/sub/x.conf"
    assert target_root(PATH, item, dest, WHEN) == "/data/0_127.0.0.9/20261207"


def test_an_item_planned_before_a_restart_gets_its_root_from_its_source() -> None:
    dest = "/data/0_127.0.0.9/20261207/top/sub/x.conf"
    # planned before the restart: the label is gone, the file log kept the destination
    assert target_root(PATH, prepared("", dest), dest, WHEN) == "/data/0_127.0.0.9/20261207"
    local = f"/data/{LOCAL_SOURCE}/20261207/up.txt"
    assert target_root(PATH, prepared("", local, None), local, WHEN) == (
        f"/data/{LOCAL_SOURCE}/20261207"
    )
    # a path that no longer leads there: only the file's own directory is the operator's
    assert target_root("/other/", prepared("", dest), dest, WHEN) == (
        "/data/0_127.0.0.9/20261207/top/sub"
    )
