"""What approvers are told when a confirmation step waits for them."""

from __future__ import annotations

import json
from types import SimpleNamespace

from jobfleet.domain.approvals import approvers
from jobfleet.engine.approvals import job_link, waiting_event
from jobfleet.engine.notify import email_payload

INFO = {"approval_info": {
    "approval_type": 2,
    "approval_user": {"user_list": ["carol", "dave", "carol"],
                      "role_list": ["JOB_RESOURCE_TRIGGER_USER", "SOME_ROLE"]},
    "approval_message": "check\nthe canary",
}}


def test_approvers_are_the_users_and_the_launcher_once_each() -> None:
    assert approvers("alice", INFO) == ["carol", "dave", "alice"]
    assert approvers("carol", INFO) == ["carol", "dave"]
    assert approvers("alice", None) == [] and approvers("alice", {}) == []


def test_the_link_is_absolute_only_with_a_public_url() -> None:
    assert job_link(None, 7) == "/api_execute/7"
    assert job_link("http://127.0.0.1:8080/", 7) == "http://127.0.0.1:8080/api_execute/7"


def test_the_event_names_the_step_its_approvers_and_the_link() -> None:
    job = SimpleNamespace(id=7, name="deploy\nweb", scope_type="biz", scope_id="2",
                          bk_biz_id=2, operator="alice")
    step = SimpleNamespace(id=31, name="go ahead?", config=INFO)
    event = waiting_event(job, step, "http://127.0.0.1:8080/api_execute/7")
    assert event["event"] == "confirm_waiting" and event["approvers"] == ["carol", "dave", "alice"]
    assert event["step_instance_id"] == 31 and event["approval_type"] == 2
    assert "'deploy web' (#7)" in event["summary"] and "carol, dave, alice" in event["summary"]
    assert "check the canary" in event["summary"]
    link = "Open http://127.0.0.1:8080/api_execute/7 to confirm or end it."
    assert event["summary"].endswith(link)
    mail = json.loads(email_payload(["ops@example.org"], event))
    # a name with a line break cannot break the mail's headers
    assert mail["subject"] == (
        "[jobfleet] Job deploy web (#7) waits for your confirmation at go ahead?")
    assert mail["text"] == event["summary"] and mail["to"] == ["ops@example.org"]
