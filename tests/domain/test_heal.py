"""Reading alert payloads, matching, templating and host references."""

from __future__ import annotations

import pytest

from jobfleet.domain import heal


def test_alertmanager_payload() -> None:
    payload = {"version": "4", "status": "firing", "alerts": [
        {"status": "resolved", "labels": {"alertname": "A", "instance": "127.0.0.1:9100"},
         "annotations": {"summary": "s"}, "fingerprint": "abc"},
        {"labels": {"alertname": "B"}}]}
    first, second = heal.read_alerts(payload)
    assert (first.status, first.alertname, first.fingerprint) == ("resolved", "A", "abc")
    assert second.status == "firing" and second.fingerprint == heal.fingerprint({"alertname": "B"})


def test_plain_payload_and_stable_fingerprint() -> None:
    [alert] = heal.read_alerts({"alertname": "Disk", "severity": "warning",
                                "labels": {"instance": "h1"}})
    assert alert.labels == {"instance": "h1", "alertname": "Disk", "severity": "warning"}
    [again] = heal.read_alerts({"labels": {"severity": "warning", "alertname": "Disk",
                                           "instance": "h1"}})
    assert alert.fingerprint == again.fingerprint


@pytest.mark.parametrize("payload", [[], "x", {"alerts": []}, {"alerts": "no"},
                                     {"alerts": [1]}, {"status": "odd"},
                                     {"labels": ["not", "an", "object"]}])
def test_bad_payloads(payload: object) -> None:
    with pytest.raises(heal.PayloadError):
        heal.read_alerts(payload)


def test_matching() -> None:
    [alert] = heal.read_alerts({"labels": {"alertname": "A", "severity": "critical",
                                           "team": "db"}})
    assert heal.matches({}, alert)
    assert heal.matches({"alertname": ["A", "B"], "severity": ["critical"]}, alert)
    assert not heal.matches({"alertname": ["B"]}, alert)
    assert heal.matches({"labels": {"team": "db"}}, alert)
    assert not heal.matches({"labels": {"team": "web"}}, alert)


def test_render_and_host_refs() -> None:
    [alert] = heal.read_alerts({"labels": {"alertname": "A", "instance": "127.0.0.1:9100",
                                           "hosts": "127.0.0.2; 127.0.0.3,127.0.0.2"},
                                "annotations": {"summary": "full"}})
    text = "{{alertname}} {{ labels.instance }} {{annotations.summary}} {{nope}}{{status}}"
    assert heal.render(text, alert) == "A 127.0.0.1:9100 full firing"
    assert heal.host_refs(alert, "instance", "ip") == ["127.0.0.1"]
    assert heal.host_refs(alert, "hosts", "ip") == ["127.0.0.2", "127.0.0.3"]
    assert heal.host_refs(alert, "missing", "ip") == []
