"""A node's first start: its identity, and the installation's first business, admin
app and user, console password and enrollment token (``bootstrap.json``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from jobfleet.domain.enrollment import AgentChannel
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.identity import IdentityStore
from jobfleet.store.people import PeopleStore, hash_password
from jobfleet.store.secrets import new_secret

log = logging.getLogger(__name__)

DEFAULT_BIZ = 2
ADMIN_APP = "jobfleet"
ADMIN_USER = "admin"


def node_id(data_dir: Path) -> str:
    """A stable identity, so a restarted node takes its own jobs back at once."""
    path = data_dir / "node_id"
    if path.exists():
        return path.read_text().strip()
    value = uuid.uuid4().hex[:16]
    path.write_text(value)
    return value


def bootstrapped(data_dir: Path) -> bool:
    return (data_dir / "bootstrap.json").exists()


def first_password() -> asyncio.Task[tuple[str, str]]:
    """The first console password and its hash, begun now on a thread: the hash is
    scrypt's tens of ms of a core, which a first start can spend reaching and checking
    its database instead of waiting for it in ``bootstrap``."""
    password = new_secret(12)
    return asyncio.ensure_future(asyncio.to_thread(lambda: (password, hash_password(password))))


async def bootstrap(
    identity: IdentityStore,
    data_dir: Path,
    url: str,
    channel: AgentChannel,
    token_ttl: float = 24 * 3600.0,
    people: PeopleStore | None = None,
    password: asyncio.Task[tuple[str, str]] | None = None,
) -> None:
    """On the first start: the default business, the admin app and user (with a console
    password when ``people`` is given: ``password``'s, when begun ahead with
    ``first_password``), an enrollment token that expires after ``token_ttl``
    seconds."""
    path = data_dir / "bootstrap.json"
    if DEFAULT_BIZ not in await identity.business_ids():
        try:
            await identity.create_business(DEFAULT_BIZ, "Default business")
        except JobError as exc:
            if exc.code != ErrorCode.CONFLICT:
                raise  # else another node starting beside this one made it
    if bootstrapped(data_dir):
        return
    try:
        secret = await identity.create_app(ADMIN_APP, "administration app", is_admin=True)
    except JobError as exc:
        if exc.code != ErrorCode.CONFLICT:
            raise
        log.warning(
            "bootstrap_skipped reason=another node initialised this database; "
            "its bootstrap.json holds the admin credentials"
        )
        return
    await identity.ensure_user(ADMIN_USER, is_admin=True)
    if people is not None:
        admin_password, digest = await (password if password is not None else first_password())
        await people.set_password(ADMIN_USER, admin_password, digest=digest)
    token = await identity.create_enroll_token(note="bootstrap", ttl_seconds=token_ttl)
    content = {
        "bk_app_code": ADMIN_APP,
        "bk_app_secret": secret,
        "admin_user": ADMIN_USER,
        # the console login (change it with `jobfleet admin user passwd admin`)
        **({"admin_password": admin_password} if people is not None else {}),
        "enroll_token": channel.token(token),
        "enroll_token_expires_at": int(time.time() + token_ttl),
        "url": url,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(content, fh, indent=2)
    log.info("bootstrap_written path=%s", path)




def read_bootstrap(data_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((data_dir / "bootstrap.json").read_text())
    return data
