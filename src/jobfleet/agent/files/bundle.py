"""Many small files of a download task in one request, made durable together.

The server answers the files' bytes one after another (bundles, ``domain.protocol``); each file
is split off by the size its task gives, checked against its SHA-256, and written
beside its destination under a temporary name as :func:`download` does. Files are put
in place in groups: one flush of the group's data (``syncfs`` of the filesystem, or an
fsync of each file where that is not available), then each file's mode and rename,
then one fsync of each directory the group renamed into. A file is reported placed
only after its group's directory fsync, so "done" always means durable.

What the bundle cannot place is left to the caller, which fetches those files one by
one: a file whose bytes do not match its checksum, and every file after the point
where the request failed or the stream ended early. A problem on the target side
(a directory in the way, permission denied) fails that file alone, with the same
error a download of it alone would give.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from jobfleet.agent.files.download import _open_target, _Target
from jobfleet.agent.files.pacing import FileThread
from jobfleet.agent.files.rights import TransferError, target_error
from jobfleet.domain import protocol
from jobfleet.durable import flush

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

# files put in place per flush: bounds the descriptors held (a file's and its directory's)
GROUP_FILES = 128
GROUP_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Wanted:
    n: int
    blob: str
    dest: str
    size: int
    sha256: str
    mode: int
    # the operator's target path ``dest`` is below (``rights.open_parent``)
    root: str | None = None


async def fetch_bundle(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    wanted: list[Wanted],
    *,
    account: str,
    create_dirs: bool,
) -> dict[int, TransferError | None]:
    """Fetch ``wanted`` in one request and put each file in place as ``account``.

    Returns an outcome for each file the bundle settled, by ``n``: None when the file
    is in place and durable, or its own :class:`TransferError`. A file with no outcome
    is for the caller to fetch alone. Never raises for a network or server failure."""
    import httpx

    outcomes: dict[int, TransferError | None] = {}
    io = FileThread()
    try:
        body = {"blobs": [w.blob for w in wanted]}
        async with client.stream(
            "POST", url, headers={**headers, "Accept-Encoding": "identity"}, json=body
        ) as response:
            if response.status_code != HTTPStatus.OK:
                logger.info("bundle refused status=%d files=%d", response.status_code, len(wanted))
                return outcomes
            stream = protocol.ExactReader(response.aiter_raw(1 << 20))
            group: list[tuple[Wanted, bytes]] = []
            held = 0
            for item in wanted:
                data = await stream.take(item.size)
                if data is None:
                    logger.info("bundle cut short at n=%d", item.n)
                    break
                group.append((item, data))
                held += len(data)
                if len(group) >= GROUP_FILES or held >= GROUP_BYTES:
                    outcomes.update(await io.run(_Group(group, account, create_dirs).place))
                    group, held = [], 0
            if group:
                outcomes.update(await io.run(_Group(group, account, create_dirs).place))
    except httpx.HTTPError as exc:
        logger.info("bundle failed error=%s", type(exc).__name__)
    finally:
        await io.close()
    return outcomes


class _Group:
    """Files whose bytes arrived, put in place together in the transfer's file thread
    (which has taken the account's identity, so every open and rename is the account's)."""

    def __init__(self, files: list[tuple[Wanted, bytes]], account: str, create: bool) -> None:
        self.files = files
        self.account = account
        self.create = create

    def place(self) -> dict[int, TransferError | None]:
        outcomes: dict[int, TransferError | None] = {}
        written: list[tuple[Wanted, _Target]] = []
        try:
            for item, data in self.files:
                if hashlib.sha256(data).hexdigest() != item.sha256.lower():
                    # left to a download of its own, which reports the mismatch
                    continue
                try:
                    target = _open_target(item.dest, self.account, self.create, item.root)
                except TransferError as exc:
                    outcomes[item.n] = exc
                    continue
                try:
                    target.write(data)
                except OSError as exc:
                    target.discard()
                    outcomes[item.n] = target_error(item.dest, exc)
                    continue
                written.append((item, target))
            try:
                flush([t.fd for _, t in written if t.fd is not None])
            except OSError as exc:
                for item, target in written:
                    target.discard()
                    outcomes[item.n] = target_error(item.dest, exc)
                written = []
            placed: list[tuple[Wanted, _Target]] = []
            for item, target in written:
                try:
                    target.place(item.mode)
                except TransferError as exc:
                    target.discard()
                    outcomes[item.n] = exc
                    continue
                placed.append((item, target))
            synced: set[str] = set()
            for item, target in placed:
                if target.parent.path not in synced:
                    synced.add(target.parent.path)
                    target.parent.fsync()
                outcomes[item.n] = None
        finally:
            for _, target in written:
                # a placed file has no temporary left: this only closes its directory
                target.discard()
        return outcomes
