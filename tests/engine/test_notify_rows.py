"""A webhook's outbox row: its URL sealed in the payload, its target masked."""

from __future__ import annotations

import orjson
from cryptography.fernet import Fernet

from jobfleet.engine.notify import row_for, webhook_url
from jobfleet.store.notify import NotifyTarget
from jobfleet.store.secrets import Cipher

URL = "https://127.0.0.1:9/services/T/B/TOKEN"


def test_a_webhook_row_keeps_its_url_sealed() -> None:
    cipher = Cipher(Fernet.generate_key())
    config = NotifyTarget(1, "webhook", URL, "hook-key-0123")
    row = row_for(config, {"event": "job_end"}, b'{"event":"job_end"}', cipher)
    assert row is not None
    assert row["target"] == "https://127.0.0.1:9/******"
    assert "TOKEN" not in row["payload"]
    assert orjson.loads(row["payload"])["signature"]
    assert webhook_url(row["target"], row["payload"], cipher) == URL


def test_a_row_queued_before_urls_were_sealed_goes_to_its_target() -> None:
    cipher = Cipher(Fernet.generate_key())
    payload = orjson.dumps({"body": "{}", "signature": None, "event": "job_end"}).decode()
    assert webhook_url(URL, payload, cipher) == URL
