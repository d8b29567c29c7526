"""NodeLocks on a real database: which node ids a running server holds."""

from __future__ import annotations

from jobfleet.store.database import Database
from jobfleet.store.node_locks import NodeLocks


async def test_a_node_id_is_live_while_its_server_holds_its_lock(db: Database) -> None:
    a, b = NodeLocks(db, "a"), NodeLocks(db, "b")
    # its own id is always live, an id nobody holds never
    assert await b.live_among(["a", "b", "c"]) == {"b"}
    await a.hold()
    try:
        # SQLite is one node's database: nobody else's id is live there
        expected = {"b"} if db.is_sqlite else {"a", "b"}
        assert await b.live_among(["a", "b", "c"]) == expected
        # asking takes nothing from the holder, nor keeps the lock from a later holder
        assert await b.live_among(["a"]) == (set() if db.is_sqlite else {"a"})
        c = NodeLocks(db, "c")
        await c.hold()
        assert await b.live_among(["c"]) == (set() if db.is_sqlite else {"c"})
        await c.stop()
    finally:
        await a.stop()
    assert await b.live_among(["a", "b"]) == {"b"}
