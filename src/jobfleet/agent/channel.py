"""How an agent reaches its server: pinned TLS to the agent port, found from ``--server``.

An enrollment token carries the fingerprint of the server's agent CA. Before it
sends anything secret, the agent fetches the server's public bootstrap document
(CA certificate and agent port) from the ``--server`` URL, checks that the CA's
SHA-256 matches the token, and keeps that CA in its state directory. From then
on it talks TLS to the agent port and trusts that CA only: pinning a private CA
is what authenticates the server, so host names are not checked (an agent may
dial any address of any node). A token without a fingerprint is for a server
whose agents talk plain HTTP (``--agent-plaintext``); an agent that pinned a CA
once never falls back to plain text.
"""

from __future__ import annotations

import functools
import hmac
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobfleet.agent.fetch import request
from jobfleet.agent.spool import write_private
from jobfleet.domain import enrollment

BOOTSTRAP_PATH = "/api/jobfleet/v1/agent-bootstrap"
PINNED_CA = "server-ca.pem"


class ChannelError(RuntimeError):
    """The server cannot be trusted or reached the way the agent must reach it."""


@dataclass(frozen=True)
class Channel:
    """Where the agent's requests and WebSocket go, and how TLS is checked there."""

    base: str
    tls: ssl.SSLContext | None

    @property
    def ws_url(self) -> str:
        if self.base.startswith("https://"):
            return "wss://" + self.base[len("https://") :]
        if self.base.startswith("http://"):
            return "ws://" + self.base[len("http://") :]
        return self.base


@functools.lru_cache(maxsize=8)
def pinned_context(ca_pem: str) -> ssl.SSLContext:
    """Trusts the server's own CA and nothing else (one context per CA: a swarm of
    agents, or an agent moving between nodes, does not build it again)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx


def load_pinned(state_dir: Path | None) -> str | None:
    if state_dir is None or not (state_dir / PINNED_CA).exists():
        return None
    return (state_dir / PINNED_CA).read_text()


def save_pinned(state_dir: Path | None, ca_pem: str) -> None:
    if state_dir is None:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / PINNED_CA
    # lost, the agent could not trust its server again without a new enrollment token
    write_private(path, ca_pem.encode(), path.with_suffix(".tmp").name, fsync=True)


def read_token(token: str | None) -> enrollment.EnrollToken | None:
    if not token:
        return None
    try:
        return enrollment.parse(token)
    except ValueError as exc:
        raise ChannelError(str(exc)) from None


async def fetch_bootstrap(server: str, verify: ssl.SSLContext | bool) -> dict[str, Any]:
    """The server's public bootstrap document; trusted only once its CA is checked."""
    resp = await request("GET", server.rstrip("/") + BOOTSTRAP_PATH, verify=verify)
    try:
        answer = resp.json()
        data = answer["data"] if answer.get("result") else None
    except (ValueError, KeyError, AttributeError):
        data = None
    if not isinstance(data, dict):
        raise ChannelError(
            f"{server} gave no agent bootstrap document (HTTP {resp.status_code}); "
            "is it a jobfleet server?"
        )
    return data


async def resolve(
    server: str,
    state_dir: Path | None,
    token: str | None,
    verify: ssl.SSLContext | bool = True,
    pinned: str | None = None,
) -> tuple[Channel, str | None]:
    """The channel to use, and the CA it pins (None: plain, as ``server`` says).

    ``verify`` checks the ``server`` URL itself when it is HTTPS; ``pinned`` is a
    CA already trusted (else the one in ``state_dir``, else the token decides)."""
    pinned = pinned or load_pinned(state_dir)
    parsed = read_token(token)
    if pinned is None and (parsed is None or parsed.ca_fingerprint is None):
        tls = verify if isinstance(verify, ssl.SSLContext) else None
        if server.startswith("https://") and tls is None:
            tls = ssl.create_default_context()
        return Channel(server.rstrip("/"), tls), None
    doc = await fetch_bootstrap(server, verify)
    if pinned is None:
        assert parsed is not None and parsed.ca_fingerprint is not None
        offered = doc.get("ca_pem")
        if not isinstance(offered, str) or not hmac.compare_digest(
            _fingerprint(offered), parsed.ca_fingerprint
        ):
            raise ChannelError(
                f"the server at {server} does not hold the CA whose fingerprint is in the "
                "enrollment token: refusing to enroll (wrong server, or someone in between)"
            )
        save_pinned(state_dir, offered)
        pinned = offered
    port = doc.get("agent_port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ChannelError(
            f"the server at {server} offers no encrypted agent port, and this agent "
            "pinned its CA: refusing to talk plain text"
        )
    host = urlsplit(server).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return Channel(f"https://{host}:{port}", pinned_context(pinned)), pinned


def _fingerprint(ca_pem: str) -> str:
    try:
        return enrollment.ca_fingerprint(ca_pem)
    except ValueError:
        return ""
