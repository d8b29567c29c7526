"""Trading an enrollment token for the agent's credential, and keeping that credential."""

from __future__ import annotations

import json
import platform
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobfleet.agent.channel import Channel, read_token
from jobfleet.agent.fetch import Response, request
from jobfleet.agent.settings import TOKEN_HELP, AgentSettings
from jobfleet.agent.spool import write_private

if TYPE_CHECKING:
    import httpx

ENROLL_PATH = "/api/jobfleet/v1/agents/enroll"


@dataclass
class Credential:
    agent_id: str
    agent_secret: str
    bk_host_id: int


def load_credential(state_dir: Path) -> Credential | None:
    path = state_dir / "credential.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Credential(data["agent_id"], data["agent_secret"], int(data["bk_host_id"]))


def save_credential(state_dir: Path, cred: Credential) -> None:
    data = {
        "agent_id": cred.agent_id,
        "agent_secret": cred.agent_secret,
        "bk_host_id": cred.bk_host_id,
    }
    # lost, the agent could not connect again without a new enrollment token
    write_private(
        state_dir / "credential.json", json.dumps(data).encode(), "credential.tmp", fsync=True
    )


class EnrollLater(RuntimeError):
    """The server could not take the enrollment now (busy, rate-limited): try again."""


def transient(exc: BaseException) -> bool:
    """Whether trying again later may help: not when TLS refused the server."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return False
        seen = seen.__cause__ or seen.__context__
    return True


async def enroll(
    settings: AgentSettings,
    http: httpx.AsyncClient | None = None,
    channel: Channel | None = None,
) -> Credential:
    """Trade the enrollment token for a credential, over ``channel`` (resolved from
    ``settings`` if not given: the server is checked before the token leaves)."""
    token = read_token(settings.enroll_token)
    if token is None:
        raise RuntimeError(f"this agent has no credential yet: give it a token with {TOKEN_HELP}")
    if channel is None:
        channel, _ = await settings.channel()
    body = {
        "token": token.secret,
        "ip": settings.ip,
        "bk_cloud_id": settings.bk_cloud_id,
        "bk_biz_id": settings.biz,
        "hostname": settings.hostname or socket.gethostname(),
        "os_type": platform.system(),
    }
    resp: Response | httpx.Response
    if http is None:
        verify: ssl.SSLContext | bool = channel.tls or True
        resp = await request("POST", channel.base + ENROLL_PATH, body=body, verify=verify)
    else:
        resp = await http.post(channel.base + ENROLL_PATH, json=body)
    if resp.status_code == 429 or resp.status_code >= 500:
        raise EnrollLater(f"enrollment deferred: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        answer = resp.json()
    except ValueError:
        raise RuntimeError(f"enrollment failed: HTTP {resp.status_code}") from None
    if not answer.get("result"):
        raise RuntimeError(f"enrollment refused: {answer.get('message')} ({answer.get('code')})")
    data = answer["data"]
    return Credential(data["agent_id"], data["agent_secret"], int(data["bk_host_id"]))
