"""The agent's settings, and what it tells the server about its host."""

from __future__ import annotations

import ipaddress
import platform
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from jobfleet.agent.channel import Channel, resolve

# the token's source in messages; it never goes on a command line (``ps`` shows those)
TOKEN_HELP = "--enroll-token-file PATH or the JOBFLEET_ENROLL_TOKEN environment variable"  # noqa: S105 - a help text


@dataclass
class AgentSettings:
    server: str
    state_dir: Path | None
    ip: str
    bk_cloud_id: int = 0
    biz: int = 2
    # from a file or the environment, never the command line
    enroll_token: str | None = None
    hostname: str = ""
    # keep below the server's recovery window, so a restarted server sees every
    # agent back before it gives up on their tasks
    max_backoff: float = 10.0
    heartbeat: float = 10.0
    # a CA bundle to verify an HTTPS ``server`` URL whose certificate is not in the
    # system store (the agent channel itself is pinned by the token)
    ca_file: Path | None = None
    # the IPv6 address to report: an address, "auto" (discover it), or "" (none, unless
    # ``ip`` itself is IPv6)
    ipv6: str = ""
    # key=value pairs dynamic groups can select hosts by
    labels: dict[str, str] = field(default_factory=dict)
    # other nodes of the same cluster, tried when ``server`` cannot be reached
    more_servers: list[str] = field(default_factory=list)
    # peer-to-peer files (opt-in): the port serving pieces to other targets (0: any
    # free port), the address it listens on, and the address peers dial ("" = the
    # address this agent's connection to the server comes from)
    peer_port: int | None = None
    peer_listen: str = "0.0.0.0"
    peer_address: str = ""

    @property
    def servers(self) -> list[str]:
        return [self.server, *(s for s in self.more_servers if s != self.server)]

    def tls(self, server: str | None = None) -> ssl.SSLContext | None:
        """How to check a server URL (the API port), not the agent channel."""
        if not (server or self.server).startswith("https://"):
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    async def channel(
        self, pinned: str | None = None, server: str | None = None
    ) -> tuple[Channel, str | None]:
        """The agent channel and the CA it pins (see ``jobfleet.agent.channel``)."""
        url = server or self.server
        return await resolve(url, self.state_dir, self.enroll_token, self.tls(url) or True, pinned)


def os_name() -> str:
    """The OS with its version, e.g. "Ubuntu 22.04.4 LTS" or "Windows 10 (10.0.19045)"."""
    try:
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        pretty = ""
    if pretty:
        return pretty
    system = platform.system()
    if system == "Windows":
        return f"Windows {platform.release()} ({platform.version()})"
    return f"{system} {platform.release()}".strip()


def discover_ipv6() -> str:
    """The global IPv6 address this host would send from, or "" without one.

    Connecting a UDP socket only picks a route and a source address: nothing is sent.
    """
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.connect(("2001:db8::1", 9))
            address = ipaddress.ip_address(sock.getsockname()[0].split("%")[0])
    except (OSError, ValueError):
        return ""
    if address.is_loopback or address.is_link_local or address.is_unspecified:
        return ""
    return str(address)


def host_ipv6(settings: AgentSettings) -> str:
    """The IPv6 address the hello reports (see ``AgentSettings.ipv6``)."""
    if settings.ipv6 == "auto":
        return discover_ipv6()
    if settings.ipv6:
        return settings.ipv6
    try:
        address = ipaddress.ip_address(settings.ip)
    except ValueError:
        return ""
    return str(address) if address.version == 6 else ""


# the keys the server keeps (jobfleet.domain.host_filters.LABEL_KEY)
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}")


def parse_labels(items: list[str]) -> dict[str, str]:
    """``key=value`` strings (``--label``) as a dict; a bad one raises ValueError."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not LABEL_KEY.fullmatch(key):
            raise ValueError(
                f"{item!r}: write key=value, the key 1-63 letters, digits and _ . - / "
                "starting with a letter or digit"
            )
        labels[key] = value.strip()
    return labels
