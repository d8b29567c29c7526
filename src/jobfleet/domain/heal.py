"""Alert-driven self-healing, the rules without I/O: reading alert payloads, matching
alerts to a rule, templating plan variables from an alert, and finding the hosts an
alert names.

Two payloads are read: Prometheus Alertmanager's webhook (``{"version": "4",
"alerts": [...]}``) and a plain one, either one alert object or ``{"alerts": [...]}``
of them, each ``{"alertname"?, "status"?, "severity"?, "labels"?, "annotations"?,
"fingerprint"?}``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from jobfleet.domain.status import VariableType

FIRING = "firing"
RESOLVED = "resolved"

# what became of an alert
STARTED = "started"
CONVERGED = "converged"
SKIPPED = "skipped"
REFUSED = "refused"
DRY_RUN = "dry_run"
DECISIONS = (STARTED, CONVERGED, SKIPPED, REFUSED, DRY_RUN)

HOST_KINDS = ("ip", "host_id")
MAX_ALERTS = 500
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d+$")


class PayloadError(ValueError):
    """The body is not an alert payload."""


@dataclass(frozen=True)
class Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")


def _text(value: Any, name: str, limit: int) -> str:
    text = str(value)[:limit]
    if "\x00" in text:
        # decisions keep these texts, and PostgreSQL's text and JSON hold no NUL
        raise PayloadError(f"{name} holds a NUL character")
    return text


def _strings(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{name} must be an object")
    return {
        _text(k, f"a name in {name}", 255): _text(v, f"{name} value", 4096)
        for k, v in value.items()
        if v is not None
    }


def fingerprint(labels: dict[str, str]) -> str:
    """A stable id of an alert by its labels (what Alertmanager's fingerprint is)."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _alert(item: Any, common_status: str) -> Alert:
    if not isinstance(item, dict):
        raise PayloadError("each alert must be an object")
    labels = _strings(item.get("labels"), "labels")
    for key in ("alertname", "severity"):
        if item.get(key) is not None and key not in labels:
            labels[key] = _text(item[key], key, 255)
    status = str(item.get("status") or common_status or FIRING).lower()
    if status not in (FIRING, RESOLVED):
        raise PayloadError(f"status must be {FIRING} or {RESOLVED}")
    given = item.get("fingerprint")
    return Alert(
        status,
        labels,
        _strings(item.get("annotations"), "annotations"),
        _text(given, "fingerprint", 128) if given else fingerprint(labels),
    )


def read_alerts(payload: Any) -> list[Alert]:
    """The alerts of an Alertmanager or plain payload."""
    if not isinstance(payload, dict):
        raise PayloadError("the body must be a JSON object")
    items = payload.get("alerts")
    if items is None:
        return [_alert(payload, "")]
    if not isinstance(items, list) or not items:
        raise PayloadError("alerts must be a non-empty list")
    if len(items) > MAX_ALERTS:
        raise PayloadError(f"more than {MAX_ALERTS} alerts")
    return [_alert(item, str(payload.get("status") or "")) for item in items]


def matches(match: dict[str, Any], alert: Alert) -> bool:
    """``match``: ``alertname`` and ``severity`` lists (any of), ``labels`` (all equal)."""
    names = match.get("alertname") or []
    if names and alert.alertname not in names:
        return False
    severities = match.get("severity") or []
    if severities and alert.severity not in severities:
        return False
    labels = match.get("labels") or {}
    return all(alert.labels.get(k) == str(v) for k, v in labels.items())


def render(template: str, alert: Alert) -> str:
    """``{{labels.x}}``, ``{{annotations.x}}``, ``{{alertname}}``, ``{{severity}}``,
    ``{{status}}``, ``{{fingerprint}}``; an unknown name renders empty."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        kind, _, key = name.partition(".")
        if kind == "labels":
            return alert.labels.get(key, "")
        if kind == "annotations":
            return alert.annotations.get(key, "")
        return {
            "alertname": alert.alertname,
            "severity": alert.severity,
            "status": alert.status,
            "fingerprint": alert.fingerprint,
        }.get(name, "")

    return _TEMPLATE.sub(value, template)


def host_refs(alert: Alert, label: str, kind: str) -> list[str]:
    """The hosts an alert names in ``label``: IPs (a ``:port`` dropped) or host ids,
    several separated by commas or semicolons."""
    raw = alert.labels.get(label, "")
    refs: list[str] = []
    for part in re.split(r"[,;\s]+", raw):
        if not part:
            continue
        if kind == "ip":
            m = _PORT.match(part)
            part = m.group(1) if m else part.strip("[]")
        if part not in refs:
            refs.append(part)
    return refs


def password_names(plan_variables: Any, names: Any) -> list[str]:
    """Which of ``names`` are password variables of a plan (its stored ``variables``).

    A rule never sets one: rules and their decisions are shown in clear to whoever views
    the business's rules."""
    secret = {
        v.get("name")
        for v in plan_variables or []
        if isinstance(v, dict) and v.get("type") == VariableType.PASSWORD
    }
    return sorted(str(n) for n in names if n in secret)
