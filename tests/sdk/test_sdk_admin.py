"""jobfleet's own API (docs/rest-api.md) through the typed helpers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from jobfleet.sdk import JobApiError, JobClient


class Recorder:
    def __init__(self, data: Any) -> None:
        self.data = data
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"result": True, "code": 0, "data": self.data})

    def client(self) -> JobClient:
        return JobClient(
            "http://jf.test", "app", "secret", "admin", biz=2, transport=httpx.MockTransport(self)
        )

    def last(self) -> tuple[str, str, dict[str, Any] | None]:
        r = self.requests[-1]
        body = json.loads(r.content) if r.content else None
        return r.method, r.url.raw_path.decode().removeprefix("/api/jobfleet/v1"), body


def test_create_app_sends_its_restrictions() -> None:
    rec = Recorder({"ok": 1})
    with rec.client() as c:
        c.create_app("ci", users=["alice"], biz=[2, 3], admin=True)
        assert rec.last() == ("POST", "/apps", {
            "app_code": "ci", "allowed_users": ["alice"], "allowed_biz": [2, 3],
            "is_admin": True})


def test_object_helpers_send_documented_requests() -> None:
    rec = Recorder({"ok": 1})
    with rec.client() as c:
        c.whoami()
        assert rec.last() == ("GET", "/whoami", None)
        c.create_app("ci", description="CI runner")
        assert rec.last() == ("POST", "/apps", {"app_code": "ci", "description": "CI runner"})
        c.create_app("ci2")
        assert rec.last() == ("POST", "/apps", {"app_code": "ci2"})
        c.delete_app("ci")
        assert rec.last() == ("DELETE", "/apps/ci", None)
        c.create_user("bob", is_admin=True)
        assert rec.last() == ("POST", "/users", {"username": "bob", "is_admin": True})
        c.grant_scope("bob", 3)
        assert rec.last() == (
            "POST",
            "/users/bob/grants",
            {"scope_type": "biz", "scope_id": "3"},
        )
        c.set_password("bob/password#", "pw")
        assert rec.last() == ("POST", "/users/bob%2Fpassword%23/password", {"password": "pw"})
        c.revoke_scope("bob@corp/x", 9000001, scope_type="biz_set")
        assert rec.last() == ("DELETE", "/users/bob%40corp%2Fx/grants/biz_set/9000001", None)
        c.create_business(3, "web")
        assert rec.last() == ("POST", "/businesses", {"bk_biz_id": 3, "name": "web"})
        c.add_host("127.0.0.9", bk_biz_id=3)
        assert rec.last() == (
            "POST",
            "/hosts",
            {"bk_biz_id": 3, "ip": "127.0.0.9", "bk_cloud_id": 0},
        )
        c.create_enroll_token(bk_biz_id=3, uses=5, ttl_seconds=600)
        assert rec.last() == (
            "POST",
            "/enroll-tokens",
            {"bk_biz_id": 3, "uses": 5, "ttl_seconds": 600},
        )
        c.revoke_agent("ag-1")
        assert rec.last() == ("DELETE", "/agents/ag-1", None)


def test_list_helpers_send_queries_and_return_lists() -> None:
    rec = Recorder([{"bk_host_id": 1}])
    with rec.client() as c:
        assert c.list_hosts(bk_biz_id=2, alive=True) == [{"bk_host_id": 1}]
        assert rec.last() == ("GET", "/hosts?bk_biz_id=2&alive=true", None)
        c.list_hosts()
        assert rec.last() == ("GET", "/hosts", None)
        c.list_apps()
        c.list_users()
        c.list_businesses()
    assert [r.url.path for r in rec.requests[-3:]] == [
        "/api/jobfleet/v1/apps",
        "/api/jobfleet/v1/users",
        "/api/jobfleet/v1/businesses",
    ]


def test_list_helper_refuses_an_object() -> None:
    with Recorder({"not": "a list"}).client() as c, pytest.raises(JobApiError):
        c.list_users()


def test_admin_call_is_the_raw_form() -> None:
    rec = Recorder({"token": "t"})
    with rec.client() as c:
        assert c.admin_call("POST", "enroll-tokens", json={"uses": 1}) == {"token": "t"}
    assert rec.last() == ("POST", "/enroll-tokens", {"uses": 1})
    # the admin API has no bk-job scope: the client's default biz is not added
    assert "bk_scope_id" not in rec.requests[-1].url.query.decode()
