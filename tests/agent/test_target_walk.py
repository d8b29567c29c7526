"""The directories below a transfer's target path are walked one name at a time and
never through a symlink; the target path itself is followed as the operator gave it."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from jobfleet.agent.files import TransferError, make_dir
from jobfleet.agent.files.download import _open_target
from jobfleet.domain.status import HostStatus

SELF = pwd.getpwuid(os.geteuid()).pw_name

pytestmark = pytest.mark.timeout(60)


def put(dest: Path, root: Path, data: bytes = b"new\n", *, create: bool = True) -> None:
    """Write ``dest`` as a download does, ``root`` being the target path."""
    target = _open_target(str(dest), SELF, create, str(root))
    target.write(data)
    target.commit(0o644)


def refused(dest: Path, root: Path, *, create: bool = True) -> str:
    with pytest.raises(TransferError) as caught:
        put(dest, root, create=create)
    assert caught.value.status == HostStatus.COPYFILE_FAILED
    return caught.value.message


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory the copy must never reach, shaped like the tree so that following a
    symlink into it would succeed."""
    out = tmp_path / "outside"
    (out / "b" / "c").mkdir(parents=True)
    return out


@pytest.mark.parametrize("level", ["a", "a/b", "a/b/c"])
def test_a_symlink_at_any_directory_below_the_root_fails_the_file(
    tmp_path: Path, outside: Path, level: str
) -> None:
    root = tmp_path / "root"
    (root / level).parent.mkdir(parents=True, exist_ok=True)
    (root / level).symlink_to(outside)
    message = refused(root / "a" / "b" / "c" / "f.txt", root)
    assert f"target {root / level} is a symbolic link" in message
    assert not list(outside.rglob("f.txt"))
    assert (root / level).is_symlink()


def test_a_dangling_symlink_below_the_root_is_not_created_through(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").symlink_to(tmp_path / "planted")
    message = refused(root / "a" / "f.txt", root)
    assert f"target {root / 'a'} is a symbolic link" in message
    assert not (tmp_path / "planted").exists()
    (root / "g.txt").symlink_to(tmp_path / "planted.txt")
    assert f"target {root / 'g.txt'} is a symbolic link" in refused(root / "g.txt", root)
    assert not (tmp_path / "planted.txt").exists()


def test_a_symlink_as_the_file_itself_fails_and_is_left(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    victim = outside / "victim"
    victim.write_text("kept\n")
    (root / "a" / "f.txt").symlink_to(victim)
    assert f"target {root / 'a' / 'f.txt'} is a symbolic link" in refused(
        root / "a" / "f.txt", root
    )
    assert victim.read_text() == "kept\n" and (root / "a" / "f.txt").is_symlink()


def test_a_file_where_a_directory_is_expected_fails(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_text("a file\n")
    message = refused(root / "a" / "f.txt", root)
    assert f"target {root / 'a'} exists and is not a directory" in message


def test_the_root_and_the_path_above_it_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "mnt" / "data"
    real.mkdir(parents=True)
    (tmp_path / "data").symlink_to(tmp_path / "mnt")
    root = tmp_path / "data" / "data"
    (tmp_path / "link").symlink_to(real)
    put(root / "a" / "b" / "f.txt", root)
    put(tmp_path / "link" / "g.txt", tmp_path / "link")
    assert (real / "a" / "b" / "f.txt").read_text() == "new\n"
    assert (real / "g.txt").read_text() == "new\n"
    # a root that does not exist yet is made, through the symlinks above it
    put(root / "later" / "h.txt", root / "later")
    assert (real / "later" / "h.txt").read_text() == "new\n"


def test_strict_mode_names_the_missing_directory_below_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    message = refused(root / "a" / "b" / "f.txt", root, create=False)
    assert f"target directory {root / 'a' / 'b'} does not exist" in message
    assert not (root / "a").exists()


def test_a_destination_outside_its_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert "is not below the target path" in refused(tmp_path / "elsewhere.txt", root)


def test_directory_entries_follow_the_same_rule(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").symlink_to(outside)
    for dest in (root / "a", root / "a" / "b" / "new"):
        with pytest.raises(TransferError) as caught:
            make_dir(str(dest), mode=0o755, account=SELF, create_dirs=True, root=str(root))
        assert caught.value.status == HostStatus.COPYFILE_FAILED
        assert f"target {root / 'a'} is a symbolic link" in caught.value.message
    assert not (outside / "b" / "new").exists()
    make_dir(str(root / "d" / "e"), mode=0o750, account=SELF, create_dirs=True, root=str(root))
    assert stat.S_IMODE((root / "d" / "e").stat().st_mode) == 0o750


def test_a_new_directory_keeps_the_set_group_id_bit_of_its_parent(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2775)
    put(shared / "a" / "b" / "f.txt", shared)
    make_dir(str(shared / "d"), mode=0o755, account=SELF, create_dirs=True, root=str(shared))
    for made in (shared / "a", shared / "a" / "b", shared / "d"):
        assert made.stat().st_mode & stat.S_ISGID, made
    # without one above, a set-ID bit of the source still never arrives
    plain = tmp_path / "plain"
    plain.mkdir()
    plain.chmod(0o755)
    make_dir(str(plain / "d"), mode=0o6755, account=SELF, create_dirs=True, root=str(plain))
    assert stat.S_IMODE((plain / "d").stat().st_mode) == 0o755
