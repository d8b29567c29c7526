"""Files the server holds: uploads from operators and from source agents, on disk.

A blob is written to ``<root>/<id>.<writer>.part`` while it streams in, checksummed
on the way, and renamed to ``<root>/<id>`` once complete, so a reader never sees half
a file and a crash leaves at most a ``.part`` to clean up. The row in ``blobs``
records who may write it and what it must contain.

Two writers of one blob (an upload URL used twice at once, an agent's retry racing
its first attempt) never mix: each claims the row with a token of its own before it
streams, the latest claim wins, and a writer finishes only if its claim still stands —
checked, and the file renamed into place, inside one transaction that holds the row,
so the stored checksum is always that of the stored bytes. The other writer gets a
409 error.

Nodes of a cluster share no disk: there (``shared``) the bytes also go to
``blob_parts`` before the blob is complete, under the writer's token, and a node
asked for a blob it does not hold copies it from there once, checks its checksum,
and serves its own copy from then on. The database is the one place every node
reaches and that outlives any node, so a file uploaded to a node that died is
still delivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, select, update

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.pieces import DIGEST_SIZE, PIECE_SIZE, PieceHasher
from jobfleet.domain.protocol import ExactReader
from jobfleet.durable import flush
from jobfleet.store.database import Database, now_ms
from jobfleet.store.inventory import chunks
from jobfleet.store.secrets import hash_secret, secret_matches
from jobfleet.store.tables import blob_parts, blob_readers, blobs

WRITE_SIZE = 4 * 1024 * 1024
# bytes per row of ``blob_parts``, and rows per transaction
PART_SIZE = 1024 * 1024
PARTS_PER_WRITE = 8
USED_MESSAGE = "This upload URL was used already"
SUPERSEDED_MESSAGE = (
    "Another upload to this file started after this one and replaces it; this one was not kept"
)
OPEN = "open"
WRITING = "writing"
COMPLETE = "complete"
FAILED = "failed"
# news of a seeded file for the other nodes of a cluster (``BlobStore.others``)
DEMANDED = "demanded"
LOST = "lost"
# how many lost files heard from other nodes a node remembers (the oldest go first)
HEARD_LOST_KEPT = 10_000


@dataclass(frozen=True)
class Blob:
    id: str
    name: str
    size: int | None
    sha256: str | None
    state: str
    writer_host_id: int | None
    bk_biz_id: int | None
    # the user who uploaded it, or asked for its upload URL
    owner: str = ""

    @classmethod
    def of(cls, row: Row[Any]) -> Blob:
        return cls(
            row.id,
            row.name,
            row.size,
            row.sha256,
            row.state,
            row.writer_host_id,
            row.bk_biz_id,
            row.owner or "",
        )


class BlobStore:
    def __init__(self, db: Database, root: Path, *, shared: bool = False) -> None:
        self.db = db
        self.root = root
        self.shared = shared
        self._fetching: dict[str, asyncio.Lock] = {}
        self._demand: dict[str, asyncio.Event] = {}
        # files whose fallback upload failed: why, for the targets that ask for them
        self._lost: dict[str, str] = {}
        self.others: Callable[[str, str, str], None] | None = None
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    # A file a seeding source serves to the targets itself (``engine.seeding``) is
    # stored only when a target asks the server for it: whoever holds its event
    # fetches it then. In a cluster the target may ask another node than the one that
    # drives the step: ``others`` (``gateway.blob_news``) tells the other nodes of a
    # demand and of a lost file, and ``heard_demand``/``heard_lost`` take their news.
    def demand(self, blob_id: str) -> asyncio.Event:
        return self._demand.setdefault(blob_id, asyncio.Event())

    def forget_demand(self, blob_id: str) -> None:
        self._demand.pop(blob_id, None)

    def asked_for(self, blob_id: str) -> None:
        event = self._demand.get(blob_id)
        if event is not None:
            event.set()
        elif self.others is not None:
            self.others(DEMANDED, blob_id, "")

    def heard_demand(self, blob_id: str) -> None:
        """Another node was asked for the file: fetch it if this node waits for that; a
        file lost here is told again (a node that missed the news asks on)."""
        event = self._demand.get(blob_id)
        if event is not None:
            event.set()
        why = self._lost.get(blob_id)
        if why is not None and self.others is not None:
            self.others(LOST, blob_id, why)

    def lost(self, blob_id: str, why: str) -> None:
        """The file will not come (its fallback upload failed): targets are told so."""
        self._lost[blob_id] = why
        if self.others is not None:
            self.others(LOST, blob_id, why)

    def heard_lost(self, blob_id: str, why: str) -> None:
        # only the driving node forgets its marks (at the step's end); news heard from
        # others is kept for the newest files only, so it cannot grow without end
        self._lost.pop(blob_id, None)
        self._lost[blob_id] = why
        while len(self._lost) > HEARD_LOST_KEPT:
            del self._lost[next(iter(self._lost))]

    def why_lost(self, blob_id: str) -> str | None:
        return self._lost.get(blob_id)

    def forget_lost(self, blob_id: str) -> None:
        self._lost.pop(blob_id, None)

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id

    def pieces_path(self, blob_id: str) -> Path:
        return self.root / f"{blob_id}.pieces"

    async def pieces(self, blob_id: str) -> list[bytes]:
        """The SHA-256 of each piece of a complete blob (``domain.pieces``).

        Computed as the blob was received and kept beside it; a blob stored
        before that, or copied from another node, is hashed here once."""
        kept = await asyncio.to_thread(pieces_file, self.pieces_path(blob_id))
        if kept is not None:
            return kept
        path = await self.local_path(blob_id)
        digests = await asyncio.to_thread(hash_pieces, path)
        await asyncio.to_thread(write_pieces, self.pieces_path(blob_id), digests)
        return digests

    async def local_path(self, blob_id: str) -> Path:
        """Where this node holds a complete blob, copied from the database first if
        another node received it."""
        path = self.path(blob_id)
        if not self.shared or await asyncio.to_thread(path.exists):
            return path
        lock = self._fetching.setdefault(blob_id, asyncio.Lock())
        try:
            async with lock:
                if not await asyncio.to_thread(path.exists):
                    await self._fetch(blob_id, path)
        finally:
            if not lock.locked():
                self._fetching.pop(blob_id, None)
        return path

    async def _fetch(self, blob_id: str, path: Path) -> None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(blobs.c.parts_token, blobs.c.sha256, blobs.c.size).where(
                        blobs.c.id == blob_id, blobs.c.state == COMPLETE
                    )
                )
            ).first()
        if row is None or row.parts_token is None:
            raise JobError(
                ErrorCode.NOT_FOUND, "The file is not held by any node", http_status=404
            )
        part = self.root / f"{blob_id}.{uuid.uuid4().hex}.fetch"
        digest = hashlib.sha256()
        size = 0
        fd = await asyncio.to_thread(os.open, part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            n = 0
            while True:
                async with self.db.connect() as conn:
                    rows = (
                        await conn.execute(
                            select(blob_parts.c.data)
                            .where(
                                blob_parts.c.blob_id == blob_id,
                                blob_parts.c.token == row.parts_token,
                                blob_parts.c.n >= n,
                                blob_parts.c.n < n + PARTS_PER_WRITE,
                            )
                            .order_by(blob_parts.c.n)
                        )
                    ).scalars().all()
                for data in rows:
                    digest.update(data)
                    size += len(data)
                    await asyncio.to_thread(_write_all, fd, bytes(data))
                if len(rows) < PARTS_PER_WRITE:
                    break
                n += PARTS_PER_WRITE
            await asyncio.to_thread(os.fsync, fd)
            if digest.hexdigest() != row.sha256 or size != row.size:
                raise JobError(
                    ErrorCode.INTERNAL_ERROR,
                    "The stored copy of the file does not match its checksum",
                    http_status=500,
                )
            os.close(fd)
            fd = -1
            await asyncio.to_thread(os.replace, part, path)
        finally:
            if fd >= 0:
                os.close(fd)
            part.unlink(missing_ok=True)

    async def _store_parts(self, blob_id: str, token: str, part: Path) -> None:
        """Copy a received file into ``blob_parts`` under the writer's token."""
        fd = await asyncio.to_thread(os.open, part, os.O_RDONLY)
        try:
            n = 0
            while True:
                batch = []
                for _ in range(PARTS_PER_WRITE):
                    data = await asyncio.to_thread(os.read, fd, PART_SIZE)
                    if not data:
                        break
                    batch.append({"blob_id": blob_id, "token": token, "n": n, "data": data})
                    n += 1
                if batch:
                    async with self.db.begin() as conn:
                        await conn.execute(insert(blob_parts), batch)
                if len(batch) < PARTS_PER_WRITE:
                    return
        finally:
            os.close(fd)

    async def create(
        self,
        *,
        name: str,
        kind: str,
        bk_biz_id: int | None = None,
        owner: str = "",
        writer_host_id: int | None = None,
        token: str | None = None,
    ) -> str:
        blob_id = uuid.uuid4().hex
        async with self.db.begin() as conn:
            await conn.execute(
                insert(blobs).values(
                    id=blob_id,
                    name=name,
                    kind=kind,
                    bk_biz_id=bk_biz_id,
                    owner=owner,
                    writer_host_id=writer_host_id,
                    state=OPEN,
                    create_time=now_ms(),
                    token_hash=hash_secret(token) if token else None,
                )
            )
        return blob_id

    async def create_many(
        self,
        names: list[str],
        *,
        kind: str,
        bk_biz_id: int | None = None,
        writer_host_id: int | None = None,
    ) -> list[str]:
        """One blob per name, in one transaction (a source directory may hold thousands)."""
        ids = [uuid.uuid4().hex for _ in names]
        now = now_ms()
        rows = [
            {
                "id": blob_id,
                "name": name,
                "kind": kind,
                "bk_biz_id": bk_biz_id,
                "owner": "",
                "writer_host_id": writer_host_id,
                "state": OPEN,
                "create_time": now,
                "token_hash": None,
            }
            for blob_id, name in zip(ids, names, strict=True)
        ]
        if rows:
            async with self.db.begin() as conn:
                await conn.execute(insert(blobs), rows)
        return ids

    async def uploaded_sources(self, paths: list[str], biz_ids: set[int]) -> list[dict[str, Any]]:
        """File-step sources for files uploaded to the server, named ``<file_id>/<name>``
        as uploads return them; one query for all of them."""
        found = await self.get_many([p.partition("/")[0] for p in paths])
        sources = []
        for path in paths:
            blob_id, _, name = path.partition("/")
            blob = found.get(blob_id)
            if (
                blob is None
                or blob.state != COMPLETE
                or name not in ("", blob.name)
                or blob.bk_biz_id not in biz_ids
            ):
                raise JobError(
                    ErrorCode.INVALID_PARAM_WITH_REASON,
                    f"Invalid parameter [file_source_list.file_list]: no uploaded file {path!r}",
                )
            sources.append({"kind": "blob", "blob_id": blob.id, "name": blob.name})
        return sources

    async def get_many(self, blob_ids: list[str]) -> dict[str, Blob]:
        found: dict[str, Blob] = {}
        async with self.db.connect() as conn:
            for part in chunks(blob_ids):
                for row in await conn.execute(select(blobs).where(blobs.c.id.in_(part))):
                    found[row.id] = Blob.of(row)
        return found

    async def check_token(self, blob_id: str, token: str) -> Blob | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(blobs).where(blobs.c.id == blob_id))).first()
        if row is None or not row.token_hash or not secret_matches(token, row.token_hash):
            return None
        return Blob.of(row)

    async def allow_readers(self, blob_ids: list[str], host_ids: list[int]) -> None:
        """Let every host read every blob, in one transaction; repeats are harmless."""
        async with self.db.begin() as conn:
            known: set[tuple[str, int]] = set()
            for part in chunks(blob_ids):
                known.update(
                    (r.blob_id, r.bk_host_id)
                    for r in await conn.execute(
                        select(blob_readers).where(blob_readers.c.blob_id.in_(part))
                    )
                )
            rows = [
                {"blob_id": b, "bk_host_id": h}
                for b in dict.fromkeys(blob_ids)
                for h in dict.fromkeys(host_ids)
                if (b, h) not in known
            ]
            for part in chunks(rows):
                await conn.execute(insert(blob_readers), list(part))

    async def may_read(self, blob_id: str, bk_host_id: int) -> bool:
        async with self.db.connect() as conn:
            return (
                await conn.execute(
                    select(blob_readers.c.blob_id).where(
                        blob_readers.c.blob_id == blob_id, blob_readers.c.bk_host_id == bk_host_id
                    )
                )
            ).first() is not None

    async def readable(self, blob_ids: list[str], bk_host_id: int) -> set[str]:
        """Which of ``blob_ids`` the host may read, in one query per thousand ids."""
        found: set[str] = set()
        async with self.db.connect() as conn:
            for part in chunks(blob_ids):
                found.update(
                    await conn.scalars(
                        select(blob_readers.c.blob_id).where(
                            blob_readers.c.blob_id.in_(part),
                            blob_readers.c.bk_host_id == bk_host_id,
                        )
                    )
                )
        return found

    async def get(self, blob_id: str) -> Blob | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(blobs).where(blobs.c.id == blob_id))).first()
        return None if row is None else Blob.of(row)

    async def receive(
        self,
        blob_id: str,
        chunks: AsyncIterator[bytes],
        *,
        max_size: int | None,
        replace: bool = False,
    ) -> Blob:
        """Stream ``chunks`` into the blob; memory stays bounded by one chunk.

        ``replace`` lets a complete blob be written again (a source agent's retry);
        otherwise a complete blob answers 409. A writer whose claim another writer
        took over meanwhile answers 409 and leaves the other's bytes in place.
        """
        token = await self._claim(blob_id, replace=replace)
        part = self.root / f"{blob_id}.{token}.part"
        digest = hashlib.sha256()
        # the digests of the file's pieces (peer-to-peer distribution), computed once here
        hasher = PieceHasher()
        size = 0
        # requests arrive in small pieces; one thread hop per few MiB, not per piece,
        # with the hashing and writing of one batch overlapping the next's arrival
        pending = bytearray()
        writing: asyncio.Future[None] | None = None
        fd = await asyncio.to_thread(os.open, part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            async for chunk in chunks:
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise JobError(
                        ErrorCode.INVALID_PARAM_WITH_REASON,
                        f"File larger than the limit of {max_size} bytes",
                        http_status=413,
                    )
                pending += chunk
                if len(pending) >= WRITE_SIZE:
                    if writing is not None:
                        await writing
                    batch, pending = pending, bytearray()
                    writing = asyncio.ensure_future(
                        asyncio.to_thread(_write_hashed, fd, batch, digest, hasher)
                    )
            if writing is not None:
                await writing
                writing = None
            if pending:
                await asyncio.to_thread(_write_hashed, fd, pending, digest, hasher)
            await asyncio.to_thread(os.fsync, fd)
            os.close(fd)
            fd = -1
            await asyncio.to_thread(
                write_pieces, self.root / f"{blob_id}.{token}.pieces", hasher.finish()
            )
            if self.shared:
                await self._store_parts(blob_id, token, part)
            await self._commit(blob_id, token, part, size, digest.hexdigest())
        except BaseException:
            if writing is not None:
                await asyncio.gather(writing, return_exceptions=True)
            if fd >= 0:
                os.close(fd)
            part.unlink(missing_ok=True)
            (self.root / f"{blob_id}.{token}.pieces").unlink(missing_ok=True)
            async with self.db.begin() as conn:
                await conn.execute(
                    update(blobs)
                    .where(blobs.c.id == blob_id, blobs.c.write_token == token)
                    .values(state=FAILED, write_token=None)
                )
                if self.shared:
                    await conn.execute(
                        delete(blob_parts).where(
                            blob_parts.c.blob_id == blob_id, blob_parts.c.token == token
                        )
                    )
            raise
        blob = await self.get(blob_id)
        assert blob is not None
        return blob

    async def receive_many(
        self, files: list[tuple[str, int]], chunks: AsyncIterator[bytes]
    ) -> dict[str, tuple[int, str] | str]:
        """Store a bundle of small files (bundles, ``domain.protocol``) that ``chunks`` carries one
        after another, each exactly its size in ``files`` (blob id, size).

        The same rules as :meth:`receive` with ``replace``, for every file: claimed with
        one token, written as a ``.part`` with its checksum and piece digests, made
        durable (one flush for a group of files), and made complete and renamed into
        place in one transaction. Returns each file's (size, sha256), or why it was not
        kept (another writer claimed it meanwhile). A body that ends early, or goes on
        after the last file, stores none of them (400)."""
        token = uuid.uuid4().hex
        ids = [b for b, _ in files]
        async with self.db.begin() as conn:
            claimed = await conn.execute(
                update(blobs)
                .where(blobs.c.id.in_(ids))
                .values(state=WRITING, write_token=token, size=None, sha256=None)
            )
            if claimed.rowcount != len(ids):
                raise JobError(ErrorCode.NOT_FOUND, "No such file", http_status=404)
        written: list[tuple[str, int, str]] = []
        try:
            stream = ExactReader(chunks)
            group: list[tuple[str, bytes]] = []
            held = 0
            for n, (blob_id, size) in enumerate(files):
                data = await stream.take(size)
                if data is None:
                    raise JobError(
                        ErrorCode.BAD_REQUEST,
                        f"The body ended inside file {n + 1} of {len(files)}",
                        http_status=400,
                    )
                group.append((blob_id, data))
                held += size
                if held >= WRITE_SIZE:
                    written += await asyncio.to_thread(_write_group, self.root, token, group)
                    group, held = [], 0
            if group:
                written += await asyncio.to_thread(_write_group, self.root, token, group)
            if await stream.take(1) is not None:
                raise JobError(
                    ErrorCode.BAD_REQUEST, "The body is longer than its files", http_status=400
                )
            if self.shared:
                for blob_id, _, _ in written:
                    await self._store_parts(blob_id, token, self._part(blob_id, token))
            return await self._commit_many(token, written)
        except BaseException:
            await asyncio.to_thread(self._drop_parts, ids, token)
            async with self.db.begin() as conn:
                await conn.execute(
                    update(blobs)
                    .where(blobs.c.id.in_(ids), blobs.c.write_token == token)
                    .values(state=FAILED, write_token=None)
                )
                if self.shared:
                    await conn.execute(
                        delete(blob_parts).where(
                            blob_parts.c.blob_id.in_(ids), blob_parts.c.token == token
                        )
                    )
            raise

    def _part(self, blob_id: str, token: str) -> Path:
        return self.root / f"{blob_id}.{token}.part"

    def _drop_parts(self, ids: list[str], token: str) -> None:
        for blob_id in ids:
            self._part(blob_id, token).unlink(missing_ok=True)
            (self.root / f"{blob_id}.{token}.pieces").unlink(missing_ok=True)

    async def _commit_many(
        self, token: str, written: list[tuple[str, int, str]]
    ) -> dict[str, tuple[int, str] | str]:
        """:meth:`_commit` for many files in one transaction: the rows this writer still
        holds are locked, then completed in one statement."""
        results: dict[str, tuple[int, str] | str] = {}
        ids = [b for b, _, _ in written]
        async with self.db.begin() as conn:
            held: set[str] = set()
            for part in chunks(ids):
                query = select(blobs.c.id).where(
                    blobs.c.id.in_(part), blobs.c.write_token == token, blobs.c.state == WRITING
                )
                if not self.db.is_sqlite:
                    query = query.with_for_update()
                held.update(await conn.scalars(query))
            done = now_ms()
            rows = [
                {
                    "b_id": blob_id,
                    "b_token": token,
                    "b_size": size,
                    "b_sha256": sha256,
                    "b_done": done,
                }
                for blob_id, size, sha256 in written
                if blob_id in held
            ]
            if rows:
                await conn.execute(
                    update(blobs)
                    .where(
                        blobs.c.id == bindparam("b_id"),
                        blobs.c.write_token == bindparam("b_token"),
                    )
                    .values(
                        state=COMPLETE,
                        write_token=None,
                        size=bindparam("b_size"),
                        sha256=bindparam("b_sha256"),
                        done_time=bindparam("b_done"),
                        parts_token=token if self.shared else None,
                    ),
                    rows,
                )
            kept = [b for b in ids if b in held]
            if self.shared and kept:
                for part in chunks(kept):
                    await conn.execute(
                        delete(blob_parts).where(
                            blob_parts.c.blob_id.in_(part), blob_parts.c.token != token
                        )
                    )
            await asyncio.to_thread(self._place_parts, kept, token)
        for blob_id, size, sha256 in written:
            results[blob_id] = (size, sha256) if blob_id in held else SUPERSEDED_MESSAGE
        await asyncio.to_thread(self._drop_parts, [b for b in ids if b not in held], token)
        return results

    def _place_parts(self, ids: list[str], token: str) -> None:
        for blob_id in ids:
            # a replaced blob's piece digests were those of its earlier bytes
            self.pieces_path(blob_id).unlink(missing_ok=True)
            os.replace(self._part(blob_id, token), self.path(blob_id))

    async def _claim(self, blob_id: str, *, replace: bool) -> str:
        """Take the blob for one writer; the token names that writer."""
        token = uuid.uuid4().hex
        states = [OPEN, WRITING, FAILED] + ([COMPLETE] if replace else [])
        async with self.db.begin() as conn:
            claimed = await conn.execute(
                update(blobs)
                .where(blobs.c.id == blob_id, blobs.c.state.in_(states))
                .values(state=WRITING, write_token=token, size=None, sha256=None)
            )
        if claimed.rowcount != 1:
            raise JobError(ErrorCode.BAD_REQUEST, USED_MESSAGE, http_status=409)
        return token

    async def _commit(self, blob_id: str, token: str, part: Path, size: int, sha256: str) -> None:
        # the row stays locked from the check to the commit: a writer claiming it
        # meanwhile waits, and then writes after this one, not under it
        async with self.db.begin() as conn:
            won = await conn.execute(
                update(blobs)
                .where(
                    blobs.c.id == blob_id,
                    blobs.c.write_token == token,
                    blobs.c.state == WRITING,
                )
                .values(
                    state=COMPLETE,
                    write_token=None,
                    size=size,
                    sha256=sha256,
                    done_time=now_ms(),
                    parts_token=token if self.shared else None,
                )
            )
            if won.rowcount != 1:
                raise JobError(ErrorCode.BAD_REQUEST, SUPERSEDED_MESSAGE, http_status=409)
            # the bytes of an earlier writer of this blob (a replaced upload) go
            await conn.execute(
                delete(blob_parts).where(
                    blob_parts.c.blob_id == blob_id, blob_parts.c.token != token
                )
            )
            pieces = self.root / f"{blob_id}.{token}.pieces"
            if await asyncio.to_thread(pieces.exists):
                await asyncio.to_thread(os.replace, pieces, self.pieces_path(blob_id))
            await asyncio.to_thread(os.replace, part, self.path(blob_id))

    async def store_bytes(self, blob_id: str, data: bytes) -> Blob:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.receive(blob_id, one(), max_size=None)


def _write_group(
    root: Path, token: str, group: list[tuple[str, bytes]]
) -> list[tuple[str, int, str]]:
    """Write small files as parts, with their piece digests; one flush makes them durable."""
    out = []
    fds: list[int] = []
    try:
        for blob_id, data in group:
            fd = os.open(
                root / f"{blob_id}.{token}.part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
            )
            fds.append(fd)
            _write_all(fd, data)
            # no piece digests kept: a small file is never shared between peers, and
            # ``pieces`` computes them from the file the once they are asked for
            out.append((blob_id, len(data), hashlib.sha256(data).hexdigest()))
        flush(fds)
    finally:
        for fd in fds:
            os.close(fd)
    return out


def pieces_file(path: Path) -> list[bytes] | None:
    """The piece digests kept beside a blob, or None if there are none (or not whole)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) < 8 or int.from_bytes(raw[:8], "big") != PIECE_SIZE:
        return None
    body = raw[8:]
    if len(body) % DIGEST_SIZE:
        return None
    return [body[i : i + DIGEST_SIZE] for i in range(0, len(body), DIGEST_SIZE)]


def write_pieces(path: Path, digests: list[bytes]) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(PIECE_SIZE.to_bytes(8, "big") + b"".join(digests))
    os.replace(temp, path)


def hash_pieces(path: Path) -> list[bytes]:
    hasher = PieceHasher()
    with path.open("rb", buffering=0) as fh:
        while data := fh.read(PIECE_SIZE):
            hasher.update(data)
    return hasher.finish()


def _write_hashed(fd: int, data: bytearray, digest: Any, hasher: PieceHasher) -> None:
    _write_all(fd, data)
    digest.update(data)
    hasher.update(data)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
