"""A test message through one notification config, and how its delivery went.

The message goes into the outbox like a job's notification, so it takes the same road:
the same outbound guard, signature, retries and mail server."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.notify import MANAGE_NOTIFY, VIEW_NOTIFY, no_mail_relay
from jobfleet.api.params import get_int, get_str
from jobfleet.api.routing import OWN_PREFIX, Call, make_endpoint, services_of, with_path
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.engine.notify import webhook_payload
from jobfleet.store.notify import EMAIL, WEBHOOK, NotifyStore, shown_target, shown_url
from jobfleet.store.outbox import OutboxStore

EVENT = "test"
# a test that cannot get through says so soon rather than after a job's retries
TEST_ATTEMPTS = 3
# the key of a test's stored payload that names its business and config
TEST_OF = "test_of"


def _id(call: Call, name: str) -> int:
    value = get_int(call.params, name, required=True, minimum=1, maximum=2**63 - 1)
    assert value is not None
    return value


def _target(config: Any) -> str:
    """What the outbox row of a config's message names as its target."""
    if config.channel == EMAIL:
        return ", ".join(str(a) for a in config.target or [])[:1024]
    return shown_url(str(config.target))


def _tagged(payload: str, biz: int, config_id: int) -> str:
    """The stored payload with the business and config whose test it is (the senders read
    only their own keys), so that only that config reads its state back."""
    stored = orjson.loads(payload)
    stored[TEST_OF] = {"bk_biz_id": biz, "config_id": config_id}
    return orjson.dumps(stored).decode()


def _test_of(payload: str) -> Any:
    try:
        stored = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return stored.get(TEST_OF) if isinstance(stored, dict) else None


def message_of(config: Any, biz: int, user: str, note: str | None) -> dict[str, Any]:
    text = (
        f"Test message from jobfleet for business {biz}, notification config "
        f"{config.id} ({config.channel}), sent by {user}."
    )
    if note:
        # the text ends up in a mail: one line
        text += "\n" + " ".join(note.split())
    return {
        "event": EVENT,
        "bk_biz_id": biz,
        "config_id": config.id,
        "operator": user,
        "time": int(time.time() * 1000),
        "summary": text,
    }


async def send_test(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE_NOTIFY)
    services = call.services
    config = await NotifyStore(services.db, services.engine.cipher).get(
        scope.bk_biz_id, _id(call, "id")
    )
    message = message_of(
        config,
        scope.bk_biz_id,
        call.caller.username,
        get_str(call.params, "note", max_length=500),
    )
    target = _target(config)
    if config.channel == WEBHOOK:
        secret = services.engine.cipher.decrypt(config.secret) if config.secret else None
        sealed = services.engine.cipher.encrypt(str(config.target))
        payload = webhook_payload(orjson.dumps(message), secret, EVENT, sealed)
    elif config.channel == EMAIL:
        if not services.mail_relay:
            # a message queued now could only fail: say why at once
            raise no_mail_relay()
        to = [str(a) for a in config.target or []]
        subject = f"[jobfleet] Test message for business {scope.bk_biz_id}"
        payload = orjson.dumps({"to": to, "subject": subject, "text": message["summary"]}).decode()
    else:
        raise JobError(ErrorCode.NOT_SUPPORTED, f"Channel {config.channel!r} cannot be tested")
    payload = _tagged(payload, scope.bk_biz_id, config.id)
    delivery = await OutboxStore(services.db).add(config.channel, target, payload, TEST_ATTEMPTS)
    await audit(
        call,
        "test_notify_config",
        "notify_config",
        str(config.id),
        scope=scope,
        detail={
            "channel": config.channel,
            "target": shown_target(config.channel, config.target),
            "delivery": delivery,
        },
    )
    return {"id": config.id, "delivery_id": delivery, "state": "pending"}


async def delivery_state(call: Call) -> dict[str, Any]:
    """How a test message went: pending, done or failed, with the last error."""
    scope = await call.scope(VIEW_NOTIFY)
    config = await NotifyStore(call.services.db, call.services.engine.cipher).get(
        scope.bk_biz_id, _id(call, "id")
    )
    delivery = _id(call, "delivery_id")
    row = await OutboxStore(call.services.db).get(delivery)
    # only a test of this config in this business: job notifications, and the tests of
    # other configs (of any business) with the same channel and target, are not read here
    if (
        row is None
        or row.job_instance_id is not None
        or row.kind != config.channel
        or row.target != _target(config)
        or _test_of(row.payload) != {"bk_biz_id": scope.bk_biz_id, "config_id": config.id}
    ):
        raise JobError(ErrorCode.NOT_FOUND, f"Test message {delivery} does not exist")
    return {
        "id": config.id,
        "delivery_id": delivery,
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
    }


def register(router: APIRouter) -> None:
    base = OWN_PREFIX + "/businesses/{bk_biz_id}/notify-configs/{id}/tests"
    router.add_api_route(
        base,
        make_endpoint(services_of, with_path(send_test)),
        methods=["POST"],
        name="POST notify test",
    )
    router.add_api_route(
        base + "/{delivery_id}",
        make_endpoint(services_of, with_path(delivery_state)),
        methods=["GET"],
        name="GET notify test",
    )
