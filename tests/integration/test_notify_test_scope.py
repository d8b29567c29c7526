"""A notification config's test message is read back only through that config, in its
business: another business's config (or another config) with the same channel and
target sees nothing of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.harness import Running, run_server

ADMIN = "/api/jobfleet/v1"
HOOK = {"channel": "webhook", "target": "http://127.0.0.1:9/same",
        "secret": "hook-key-0123456789", "statuses": [4]}


@pytest.fixture
async def running(tmp_path: Path, database_url: str) -> AsyncIterator[Running]:
    # a webhook at an address the server may not send to is refused when it is saved
    async with run_server(tmp_path, database_url,
                          server={"callback_allow": ["127.0.0.0/8"]}) as run:
        yield run


async def test_a_test_delivery_is_seen_only_through_its_own_config(running: Running) -> None:
    wire = running.wire
    assert (await wire.post(f"{ADMIN}/businesses", {"bk_biz_id": 3, "name": "three"}))["result"]
    ids = {}
    for name, biz in (("mine", 2), ("twin", 2), ("other", 3)):
        made = await wire.post(f"{ADMIN}/businesses/{biz}/notify-configs", HOOK)
        assert made["result"], made
        ids[name] = made["data"]["id"]
    sent = await wire.post(f"{ADMIN}/businesses/2/notify-configs/{ids['mine']}/tests", {})
    assert sent["result"], sent
    delivery = sent["data"]["delivery_id"]
    own = await wire.get(f"{ADMIN}/businesses/2/notify-configs/{ids['mine']}/tests/{delivery}", {})
    assert own["result"] and own["data"]["delivery_id"] == delivery, own
    for biz, name in ((3, "other"), (2, "twin")):
        seen = await wire.get(
            f"{ADMIN}/businesses/{biz}/notify-configs/{ids[name]}/tests/{delivery}", {})
        assert not seen["result"] and "does not exist" in seen["message"], (name, seen)
        assert seen.get("data") is None
