"""The outbox sender on a real database: a row it cannot handle fails like any attempt."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from cryptography.fernet import Fernet

from jobfleet.engine.callbacks import CallbackSender
from jobfleet.engine.settings import EngineSettings
from jobfleet.store.database import Database
from jobfleet.store.notify import WEBHOOK
from jobfleet.store.outbox import OutboxStore
from jobfleet.store.secrets import Cipher

TOKEN = "SEALEDTOKEN0123"


async def _until_done(outbox: OutboxStore, ids: list[int], timeout: float = 15.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [await outbox.get(i) for i in ids]
        if all(r is not None and r.state != "pending" for r in rows):
            return rows
        assert time.monotonic() < deadline, [(r.state, r.attempts) for r in rows if r]
        await asyncio.sleep(0.05)


async def test_a_row_the_sender_cannot_handle_counts_its_attempts_and_fails(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobfleet")
    cipher = Cipher(Fernet.generate_key())
    # a callback sealed with a key the server no longer has, and a webhook whose payload
    # is not what a webhook keeps: opening either raises on every attempt
    rotated = Cipher(Fernet.generate_key()).encrypt(f"http://127.0.0.1:9/cb?token={TOKEN}")
    outbox = OutboxStore(db)
    ids = [await outbox.add("callback", rotated, "{}", 3),
           await outbox.add(WEBHOOK, "http://127.0.0.1:9/******", f"token={TOKEN}", 3)]
    settings = EngineSettings(node_id="n1", callback_backoff=0.01, callback_backoff_max=0.05)
    sender = CallbackSender(db, settings, cipher=cipher)
    sender.start()
    try:
        rows = await _until_done(outbox, ids)
    finally:
        await sender.stop()
    assert [(r.state, r.attempts) for r in rows] == [("failed", 3), ("failed", 3)]
    assert rows[0].last_error.startswith("internal error: ValueError at ")
    assert rows[1].last_error.startswith("internal error: JSONDecodeError at ")
    assert sender.gave_up == {"callback": 1, WEBHOOK: 1}
    assert TOKEN not in caplog.text and TOKEN not in repr(rows[1].last_error)

