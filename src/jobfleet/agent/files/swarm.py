"""Downloading a file from a swarm: pieces from peers and from the server, each checked.

The server seeds each piece to one member of the swarm (``protocol.Swarm``); this
agent fetches the pieces seeded to it from the server, the rest from its peers —
rarest first, at random among equals — and offers every piece it has checked to
the others (``agent.peers``). A piece whose hash does not match drops the peer
that sent it; a peer that cannot be reached, refuses or breaks the protocol is
dropped too. The pieces seeded to a dropped peer, and everything still missing
once no piece has come for ``stall`` seconds while this agent had nothing to fetch
from the server, are fetched from the server. Pieces from peers are received,
hashed and written on threads (one call each), pieces from the server on the
file thread; each is written where it belongs (``pwrite``), so the file is
complete when the last one lands, and its pieces' digests (computed by the
server from the stored file) stand for its checksum.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from jobfleet.agent.files.download import _Opened, _Target
from jobfleet.agent.files.pacing import FileThread, Meter, Progress
from jobfleet.agent.files.rights import ServerRefused, TransferError, target_error
from jobfleet.agent.files.upload import describe_http_error
from jobfleet.agent.peers import ItemShare, PeerError, PeerLink, PeerServer
from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

# fetch(offset, length, into) -> the bytes of that range of the file, from the server
ServerRange = Callable[[int, int, bytearray], Awaitable[memoryview]]
PEER_WORKERS = 4
STALL = 15.0
HAVE_AGE = 0.3


def digests_of(encoded: str, size: int, piece_size: int) -> list[bytes]:
    raw = base64.b64decode(encoded, validate=True)
    count = protocol.piece_count(size, piece_size)
    if len(raw) != count * protocol.DIGEST_SIZE:
        raise ValueError(f"{len(raw) // protocol.DIGEST_SIZE} piece digests for {count} pieces")
    return [raw[i : i + protocol.DIGEST_SIZE] for i in range(0, len(raw), protocol.DIGEST_SIZE)]


class _Peer:
    def __init__(self, index: int, link: PeerLink) -> None:
        self.index = index
        self.link = link
        self.has = b""
        self.asked = 0.0
        self.busy = False
        self.dropped = ""


class SwarmItem:
    """One file of one transfer, fetched from a swarm into ``target``."""

    def __init__(
        self,
        swarm: protocol.Swarm,
        n: int,
        first_piece: int,
        size: int,
        digests: list[bytes],
        target: _Target,
        io: FileThread,
        server: ServerRange,
        peers: PeerServer,
        on_progress: Callable[[Progress], None] | None,
        stall: float = STALL,
        seed: protocol.ItemSeed | None = None,
    ) -> None:
        self.swarm = swarm
        self.n = n
        self.first = first_piece
        self.size = size
        self.piece_size = int(swarm["piece_size"])
        self.digests = digests
        self.count = len(digests)
        self.target = target
        self.io = io
        self.server = server
        self.peer_server = peers
        self.stall = stall
        self.have = bytearray(self.count)
        self.missing = self.count
        self.inflight: set[int] = set()
        self.meter = Meter(size, on_progress)
        self.done_bytes = 0
        # the stall clock: the last piece stored, and since when the server loop has
        # had nothing to fetch (a slow server link delaying this member's own seed
        # pieces is no stall)
        self.last_gain = time.monotonic()
        self.idle_since: float | None = None
        self.server_all = False
        self.changed = asyncio.Event()
        members = list(swarm["members"])
        me = int(swarm["me"])
        self.me = me
        self.members = len(members)
        self.peers = [
            _Peer(i, PeerLink(a, swarm["transfer"], swarm["token"]))
            for i, a in enumerate(members)
            if i != me
        ]
        self.by_index = {p.index: p for p in self.peers}
        self.from_server = 0
        self.from_peers = 0
        # peers are read on threads of their own: receiving, hashing and writing a
        # piece is one call that releases the GIL, not a loop turn per packet
        self.threads = concurrent.futures.ThreadPoolExecutor(
            max(1, min(PEER_WORKERS, len(self.peers))), thread_name_prefix="jobfleet-peer"
        )
        self.server_bytes = 0
        self.peer_bytes = 0
        # the source agent serving the file itself (``file_seed``): what would come
        # from the server comes from it while it lives, and the server's copy may
        # still be arriving (wait for it until the token expires)
        self.seed = (
            PeerLink(seed["peer"], seed["transfer"], seed["token"]) if seed is not None else None
        )
        self.seed_n = int(seed["n"]) if seed is not None else n
        self.seed_dropped = ""
        self.from_seed = 0

    def seeder(self, index: int) -> int:
        return (self.first + index) % self.members

    def span(self, index: int) -> tuple[int, int]:
        offset = index * self.piece_size
        return offset, min(self.piece_size, self.size - offset)

    async def run(self) -> None:
        assert self.target.fd is not None
        await self.io.run(lambda: os.ftruncate(self.target.fd or -1, self.size))
        share = ItemShare(os.dup(self.target.fd), self.size, self.piece_size, self.have)
        self.peer_server.offer(
            self.swarm["transfer"], self.swarm["token"], float(self.swarm["expires"]), self.n, share
        )
        workers = [asyncio.create_task(self._server_loop())]
        workers += [
            asyncio.create_task(self._peer_loop())
            for _ in range(min(PEER_WORKERS, len(self.peers)))
        ]
        try:
            while self.missing:
                failed = [w for w in workers if w.done() and w.exception() is not None]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
                if all(w.done() for w in workers):
                    break
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.changed.wait()
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for p in self.peers:
                p.link.close()
            if self.seed is not None:
                self.seed.close()
            # no thread may write to the target once it is closed (its descriptor
            # number could be another file's by then)
            await asyncio.to_thread(self.threads.shutdown, wait=True, cancel_futures=True)
        if self.missing:
            raise TransferError(
                HostStatus.GSE_FILE_TASK_ERROR,
                f"{self.missing} pieces of {self.target.dest} missing",
            )
        self.meter.finish(self.size)
        log.info(
            "swarm_download dest=%s size=%d from_server=%d from_seed=%d from_peers=%d dropped=%s",
            self.target.dest,
            self.size,
            self.from_server,
            self.from_seed,
            self.from_peers,
            ",".join(p.link.address for p in self.peers if p.dropped) or "-",
        )

    def _orphan(self, index: int) -> bool:
        seeder = self.seeder(index)
        if seeder == self.me or self.server_all:
            return True
        peer = self.by_index.get(seeder)
        return peer is None or bool(peer.dropped)

    async def _server_loop(self) -> None:
        buffer = bytearray(self.piece_size)
        while self.missing:
            now = time.monotonic()
            if (
                not self.server_all
                and self.idle_since is not None
                and now - max(self.last_gain, self.idle_since) > self.stall
            ):
                log.info("swarm_stalled dest=%s missing=%d", self.target.dest, self.missing)
                self.server_all = True
            if not self.server_all and all(p.dropped for p in self.peers):
                self.server_all = True
            index = next(
                (
                    i
                    for i in range(self.count)
                    if not self.have[i] and i not in self.inflight and self._orphan(i)
                ),
                None,
            )
            if index is None:
                self.idle_since = self.idle_since or now
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self.changed.wait()
                continue
            self.idle_since = None
            self.inflight.add(index)
            try:
                if await self._from_seed(index, buffer):
                    continue
                offset, length = self.span(index)
                data = await self._server_piece(offset, length, buffer)
                if not await self._store(index, data):
                    raise TransferError(
                        HostStatus.GSE_FILE_TASK_ERROR,
                        f"piece {index} of {self.target.dest} from the server does not match "
                        "its checksum",
                    )
                self.from_server += 1
                self.server_bytes += length
            finally:
                self.inflight.discard(index)

    async def _from_seed(self, index: int, buffer: bytearray) -> bool:
        """Piece ``index`` from the source agent, if it serves the file; False: ask the server."""
        seed = self.seed
        if seed is None or self.seed_dropped:
            return False
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                self.threads, self._receive, seed, self.seed_n, index, buffer
            )
        except (OSError, TimeoutError, PeerError, ValueError) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        if outcome != "ok":
            # it stopped serving the file, lies or is gone: the server has (or will
            # have) every piece
            self.seed_dropped = outcome
            seed.close()
            log.warning("swarm_seed_dropped peer=%s reason=%s", seed.address, outcome)
            return False
        _, length = self.span(index)
        self._got(index, length)
        self.from_seed += 1
        self.peer_bytes += length
        return True

    async def _server_piece(self, offset: int, length: int, buffer: bytearray) -> memoryview:
        delay = 0.2
        while True:
            try:
                return await self.server(offset, length, buffer)
            except TransferError as exc:
                # with a seed, the source's upload may still be on its way to the server
                # (409); a file the server says it will not have (410) is not waited for
                if (
                    self.seed is None
                    or exc.status != HostStatus.GSE_FILE_ERROR
                    or (isinstance(exc, ServerRefused) and exc.gone)
                    or time.time() + delay > float(self.swarm["expires"])
                ):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _peer_loop(self) -> None:
        buffer = bytearray(self.piece_size)
        while self.missing:
            peer = self._pick_peer()
            if peer is None:
                await asyncio.sleep(0.1)
                continue
            peer.busy = True
            try:
                await self._from_peer(peer, buffer)
            except (OSError, TimeoutError, PeerError, ValueError) as exc:
                self._drop(peer, f"{type(exc).__name__}: {exc}")
            finally:
                peer.busy = False

    def _pick_peer(self) -> _Peer | None:
        live = [p for p in self.peers if not p.dropped and not p.busy]
        if not live:
            return None
        useful = [p for p in live if self._wanted(p)]
        return random.choice(useful or live)

    def _wanted(self, peer: _Peer) -> bool:
        has = peer.has
        return any(has[i] and not self.have[i] and i not in self.inflight for i in range(len(has)))

    async def _from_peer(self, peer: _Peer, buffer: bytearray) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if not self._wanted(peer):
            if now - peer.asked < HAVE_AGE:
                await asyncio.sleep(HAVE_AGE - (now - peer.asked))
            peer.has = await loop.run_in_executor(self.threads, peer.link.have, self.n)
            peer.asked = time.monotonic()
            if peer.has and len(peer.has) != self.count:
                raise PeerError(f"a bitfield of {len(peer.has)} pieces for {self.count}")
        choices = [
            i
            for i in range(len(peer.has))
            if peer.has[i] and not self.have[i] and i not in self.inflight
        ]
        if not choices:
            return
        index = self._rarest(choices)
        self.inflight.add(index)
        try:
            _, length = self.span(index)
            outcome = await loop.run_in_executor(
                self.threads, self._receive, peer.link, self.n, index, buffer
            )
            if outcome == "missing":
                peer.has = b""
                return
            self._got(index, length)
            self.from_peers += 1
            self.peer_bytes += length
        finally:
            self.inflight.discard(index)

    def _receive(self, link: PeerLink, n: int, index: int, buffer: bytearray) -> str:
        """On a thread: piece ``index`` from ``link``, checked and written in place.

        "ok", or "missing" when the peer does not hold it; raises ``PeerError`` for a
        piece that is not what its digest says."""
        fd = self.target.fd
        assert fd is not None
        offset, length = self.span(index)
        data = link.get(n, index, buffer)
        if data is None:
            return "missing"
        if len(data) != length:
            raise PeerError(f"piece {index}: {len(data)} bytes for {length}")
        if hashlib.sha256(data).digest() != self.digests[index]:
            raise PeerError(f"piece {index} does not match its checksum")
        try:
            _pwrite_all(fd, data, offset)
        except OSError as exc:
            raise target_error(self.target.dest, exc) from None
        return "ok"

    def _rarest(self, choices: list[int]) -> int:
        counts = {
            i: sum(1 for p in self.peers if not p.dropped and i < len(p.has) and p.has[i])
            for i in choices
        }
        fewest = min(counts.values())
        return random.choice([i for i, c in counts.items() if c == fewest])

    def _drop(self, peer: _Peer, reason: str) -> None:
        peer.dropped = reason
        peer.link.close()
        log.warning("swarm_peer_dropped peer=%s reason=%s", peer.link.address, reason)
        self.changed.set()

    async def _store(self, index: int, data: memoryview) -> bool:
        """Check a piece and write it in place; False if its hash is wrong."""
        fd = self.target.fd
        assert fd is not None
        offset, _ = self.span(index)
        expected = self.digests[index]

        def check_and_write() -> bool:
            if hashlib.sha256(data).digest() != expected:
                return False
            _pwrite_all(fd, data, offset)
            return True

        try:
            ok = await self.io.run(check_and_write)
        except OSError as exc:
            raise target_error(self.target.dest, exc) from None
        if ok:
            self._got(index, len(data))
        return ok

    def _got(self, index: int, length: int) -> None:
        if not self.have[index]:
            self.have[index] = 1
            self.missing -= 1
            self.last_gain = time.monotonic()
            self.done_bytes += length
            self.meter.update(self.done_bytes)
            self.changed.set()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


async def swarm_download(
    swarm: protocol.Swarm,
    n: int,
    first_piece: int,
    dest: str,
    *,
    size: int,
    pieces: str,
    mode: int,
    account: str,
    create_dirs: bool,
    server: ServerRange,
    peers: PeerServer,
    on_progress: Callable[[Progress], None] | None = None,
    stall: float = STALL,
    seed: protocol.ItemSeed | None = None,
    root: str | None = None,
) -> tuple[int, int]:
    """Like ``download``, with the pieces taken from the swarm and the server.

    Returns the bytes that came from the server and from peers."""
    try:
        digests = digests_of(pieces, size, int(swarm["piece_size"]))
    except ValueError as exc:
        raise TransferError(HostStatus.GSE_FILE_TASK_ERROR, f"bad piece list: {exc}") from None
    io = FileThread()
    opened = _Opened()
    try:
        target = await io.run(lambda: opened.open(dest, account, create_dirs, root))
        item = SwarmItem(
            swarm,
            n,
            first_piece,
            size,
            digests,
            target,
            io,
            server,
            peers,
            on_progress,
            stall,
            seed,
        )
        await item.run()
        committed = target
        await io.run(lambda: committed.commit(mode))
    except BaseException:
        await io.close(opened.discard)
        raise
    await io.close()
    return item.server_bytes, item.peer_bytes


async def server_range(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    offset: int,
    length: int,
    into: bytearray,
) -> memoryview:
    """Bytes ``offset`` to ``offset + length`` of a blob, from the server (``Range``)."""
    import httpx

    request = {
        **headers,
        "Accept-Encoding": "identity",
        "Range": f"bytes={offset}-{offset + length - 1}",
    }
    got = 0
    try:
        async with client.stream("GET", url, headers=request) as response:
            if response.status_code != HTTPStatus.PARTIAL_CONTENT:
                raise ServerRefused(response.status_code)
            async for data in response.aiter_raw(1 << 20):
                if got + len(data) > length:
                    raise TransferError(
                        HostStatus.GSE_FILE_TASK_ERROR, "the server sent more than was asked"
                    )
                into[got : got + len(data)] = data
                got += len(data)
    except httpx.TransportError as exc:
        raise TransferError(
            HostStatus.GSE_FILE_ERROR, f"fetch failed: {describe_http_error(exc)}"
        ) from exc
    if got != length:
        raise TransferError(HostStatus.GSE_FILE_ERROR, f"fetch ended at {got} of {length} bytes")
    return memoryview(into)[:got]
