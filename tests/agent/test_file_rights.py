"""Paths are resolved as the account would resolve them: symlinks at any component, ``..``.

Each test runs twice: with the kernel judging (a thread takes the account's identity)
and with the agent's own judgement only (where threads cannot take one).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobfleet.agent import credentials
from jobfleet.agent.accounts import lookup_account
from jobfleet.agent.files import TransferError, expand_sources, make_dir, upload
from jobfleet.domain.status import HostStatus

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="acting for another account needs root"),
]

try:
    pwd.getpwnam("nobody")
except KeyError:  # pragma: no cover - every test host has one
    pytestmark.append(pytest.mark.skip(reason="no 'nobody' account"))


@pytest.fixture(params=["kernel", "judged"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "judged":
        monkeypatch.setattr(credentials, "supported", lambda: False)
    elif not credentials.supported():
        pytest.skip("threads cannot take an identity on this machine")
    return str(request.param)


@pytest.fixture
def tree() -> Iterator[Path]:
    """``priv`` (root, 0700) holds a world-readable secret; ``pub`` is world-writable
    and sticky, and ``nobody`` has planted symlinks there."""
    top = Path(tempfile.mkdtemp(prefix="jobfleet-rights-"))
    top.chmod(0o755)
    priv = top / "priv"
    priv.mkdir(mode=0o700)
    (priv / "secret").write_text("root's secret")
    (priv / "secret").chmod(0o644)
    (priv / "sub").mkdir(mode=0o755)
    (priv / "sub" / "deep").write_text("deeper secret")
    pub = top / "pub"
    pub.mkdir()
    pub.chmod(0o1777)
    (pub / "mine.txt").write_text("fine")
    (pub / "mine.txt").chmod(0o644)
    planted = [
        f"ln -s {priv}/secret {pub}/link",  # last component, absolute
        f"ln -s {priv} {pub}/dirlink",  # a directory in the middle
        f"ln -s ../priv/secret {pub}/rel",  # relative
        f"ln -s rel {pub}/chain",  # a chain of links
        f"ln -s {pub}/dirlink/sub {pub}/deeplink",  # through a linked directory
    ]
    for command in planted:
        subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", command], check=True)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def names(found: list[object]) -> set[str]:
    return {os.path.basename(getattr(f, "path", "")) for f in found}


def test_symlinks_to_what_the_account_cannot_read_are_not_listed(mode: str, tree: Path) -> None:
    pub = tree / "pub"
    denied = [
        f"{pub}/link",
        f"{pub}/dirlink/secret",
        f"{pub}/rel",
        f"{pub}/chain",
        f"{pub}/deeplink/deep",
        f"{pub}/deeplink",
        f"{pub}/../priv/secret",
        f"{pub}/dirlink/../priv/secret",
    ]
    for pattern in denied:
        found, missing = expand_sources([pattern], "nobody")
        assert found == [], pattern
        assert len(missing) == 1, pattern

    # the same links reached through a directory copy, a glob and a regex
    for pattern in (str(pub), f"{pub}/*", f"{pub}/REGEX:.*", f"{pub}/dirlink/*"):
        found, _ = expand_sources([pattern], "nobody")
        assert names(found) <= {"pub", "mine.txt"}, pattern
        assert "mine.txt" in names(found) or pattern.endswith("dirlink/*")

    # root itself follows them
    found, missing = expand_sources([f"{pub}/chain", f"{pub}/deeplink/deep"], "root")
    assert missing == [] and len(found) == 2


def test_a_link_the_account_may_follow_is_copied(mode: str, tree: Path) -> None:
    pub = tree / "pub"
    subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"ln -s mine.txt {pub}/ok"], check=True)
    found, missing = expand_sources([f"{pub}/ok"], "nobody")
    assert (names(found), missing) == ({"ok"}, [])


async def test_upload_refuses_the_same_links(mode: str, tree: Path) -> None:
    pub = tree / "pub"
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9") as client:
        for path in ("link", "dirlink/secret", "rel", "chain", "deeplink/deep"):
            with pytest.raises(TransferError) as caught:
                # refused before any connection is made
                await upload(
                    client,
                    "http://127.0.0.1:9/never",
                    {},
                    f"{pub}/{path}",
                    speed_limit=None,
                    account="nobody",
                )
            assert caught.value.status == HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST, path


def test_targets_resolving_outside_what_the_account_may_write(mode: str, tree: Path) -> None:
    pub = tree / "pub"
    (tree / "priv").chmod(0o755)  # readable, but only root writes there
    for dest in (f"{pub}/dirlink/new", f"{pub}/../priv/new", f"{pub}/dirlink/sub/new"):
        with pytest.raises(TransferError) as caught:
            make_dir(dest, mode=0o755, account="nobody", create_dirs=True)
        assert caught.value.status == HostStatus.COPYFILE_FAILED, dest
    assert sorted(os.listdir(tree / "priv")) == ["secret", "sub"]
    make_dir(f"{pub}/made", mode=0o755, account="nobody", create_dirs=False)
    assert (pub / "made").stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_a_thread_keeps_the_identity_it_took_and_no_other_thread_gets_it(tree: Path) -> None:
    if not credentials.supported():
        pytest.skip("threads cannot take an identity on this machine")
    account = lookup_account("nobody")
    seen: list[bool] = []

    def work() -> None:
        try:
            open(tree / "priv" / "secret").close()
            seen.append(True)
        except PermissionError:
            seen.append(False)

    assert credentials.run_as(account, lambda: (work(), credentials.acting())[1]) is True
    # the calling thread and a fresh one still read as root
    work()
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [False, True, True]
    assert credentials.acting() is False
