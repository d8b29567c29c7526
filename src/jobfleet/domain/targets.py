"""Target expressions: which hosts a step runs on."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.host_addresses import embedded_ipv4

MAX_SCRIPT_TARGETS = 50_000


@dataclass(frozen=True)
class IpTarget:
    bk_cloud_id: int
    ip: str


@dataclass
class TargetSpec:
    """A parsed ``target_server``: everything a caller named, not yet resolved."""

    host_ids: list[int] = field(default_factory=list)
    ips: list[IpTarget] = field(default_factory=list)
    topo_nodes: list[tuple[str, int]] = field(default_factory=list)
    dynamic_groups: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.host_ids or self.ips or self.topo_nodes or self.dynamic_groups)


def _int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        result = int(value)
    except (TypeError, ValueError):
        raise JobError.invalid(name) from None
    if result < 0:
        raise JobError.invalid(name)
    return result


def normalize_ip(value: Any) -> str:
    """An address in normal form; an IPv6 form of an IPv4 address (``::ffff:a.b.c.d``)
    is that IPv4 address (see ``host_addresses``)."""
    if not isinstance(value, str):
        raise JobError.invalid("ip")
    try:
        address = str(ipaddress.ip_address(value.strip()))
        return embedded_ipv4(address) or address
    except ValueError:
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            # a part of it: the answer (and the log) never grows with what was sent
            f"Invalid parameter [ip]: {value[:64]!r} is not an IP address",
        ) from None


def parse_target(raw: Any, name: str = "target_server") -> TargetSpec:
    """Parse the ``server`` object of the reference (§1.6)."""
    if raw is None:
        raise JobError.missing(name)
    if not isinstance(raw, dict):
        raise JobError.invalid(name)
    spec = TargetSpec()
    host_ids = raw.get("host_id_list") or []
    ips = raw.get("ip_list") or []
    topo = raw.get("topo_node_list") or []
    groups = raw.get("dynamic_group_list") or []
    for item in (host_ids, ips, topo, groups):
        if not isinstance(item, list):
            raise JobError.invalid(name)
    seen_ids: set[int] = set()
    for value in host_ids:
        host_id = _int(value, f"{name}.host_id_list")
        if host_id not in seen_ids:
            seen_ids.add(host_id)
            spec.host_ids.append(host_id)
    seen_ips: set[IpTarget] = set()
    for item in ips:
        if not isinstance(item, dict) or "ip" not in item:
            raise JobError.invalid(f"{name}.ip_list")
        target = IpTarget(
            _int(item.get("bk_cloud_id", 0), f"{name}.ip_list.bk_cloud_id"),
            normalize_ip(item["ip"]),
        )
        if target not in seen_ips:
            seen_ips.add(target)
            spec.ips.append(target)
    for item in topo:
        if not isinstance(item, dict) or "id" not in item:
            raise JobError.invalid(f"{name}.topo_node_list")
        spec.topo_nodes.append(
            (str(item.get("node_type") or "module"), _int(item["id"], f"{name}.topo_node_list.id"))
        )
    for item in groups:
        if not isinstance(item, dict) or "id" not in item:
            raise JobError.invalid(f"{name}.dynamic_group_list")
        spec.dynamic_groups.append(str(item["id"]))
    if spec.empty:
        raise JobError(ErrorCode.HOST_LIST_EMPTY, f"Host list of [{name}] is empty")
    return spec
