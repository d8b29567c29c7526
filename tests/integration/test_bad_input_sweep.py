"""Every bk-job route, fed wrong types and junk: always the envelope, never an internal error."""

from __future__ import annotations

import base64
import warnings
from typing import Any

import pytest
from tests.integration.harness import Running

# thousands of requests one after another
pytestmark = pytest.mark.nodelay

V3 = "/api/bk-job/prod/api/v3/"
# fields the APIs read, each given a value of a type it does not take
JUNK: dict[str, Any] = {
    name: value
    for name, value in (
        ("job_instance_id", {"x": 1}), ("step_instance_id", [1]), ("job_plan_id", "plan"),
        ("id", {"id": 1}), ("script_id", {"a": 1}), ("script_version_id", "v"),
        ("global_var_list", [{"id": "x", "server": "nope"}, 5, None]),
        ("target_server", {"ip_list": "127.1.2.3", "host_id_list": [{"a": 1}]}),
        ("rolling_config", {"expression": 5, "mode": "fast"}),
        ("script_language", [1]), ("script_content", 5), ("content", {"b": 64}),
        ("operation_code", "stop"), ("expression", ["* * * * *"]), ("execute_time", "soon"),
        ("execute_time_zone", 5), ("status", [1]), ("start", "first"), ("length", {"n": 1}),
        ("file_source_list", {"file_list": "x"}), ("file_target_path", 5),
        ("account_alias", {"a": 1}), ("account_id", "root"), ("name", {"n": 1}),
        ("version", ["1"]), ("script_language_list", "shell"), ("action", "block"),
        ("category", "system"), ("type", "linux"), ("execute_count", "last"),
        ("return_ip_result", {"x": 1}), ("ip_list", "127.1.2.3"), ("host_id_list", "1"),
        ("create_time_start", "yesterday"), ("create_time_end", []),
        ("job_template_id", "t"), ("batch", "first"), ("max_host_num_per_group", "many"),
    )
}


async def test_no_route_answers_an_internal_error(running: Running) -> None:
    esb = "/api/c/compapi/v2/jobv3/"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. duplicate operation ids in /openapi.json
        spec = running.server.app.openapi()
    names = sorted(path[len(esb):] for path in spec["paths"] if path.startswith(esb))
    assert len(names) > 50, names
    for name in names:
        for body in ({}, {"bk_biz_id": 2}, {"bk_biz_id": 2, **JUNK}, {"bk_biz_id": [2]},
                     {"bk_scope_type": "biz", "bk_scope_id": {"x": 1}}):
            answer = await running.wire.post(V3 + name, body)
            assert set(answer) >= {"result", "code"}, (name, body, answer)
            assert answer["code"] != 1240002, (name, body, answer)
            if not answer["result"]:
                assert answer.get("message"), (name, answer)
        raw = await running.wire.http.post(V3 + name, content=b"{not json",
                                           headers=running.wire.headers())
        assert raw.status_code in (200, 400, 405) and raw.json()["result"] is False, name


BIG = 2**63  # one past the largest BigInteger
OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("job_instance_id", BIG), ("step_instance_id", -(2**63) - 1), ("job_plan_id", 2**64),
    ("bk_biz_id", "99999999999999999999"), ("id", 1e300), ("script_id", BIG),
    ("status", 2**31), ("execute_count", -1), ("start", 2**31), ("length", -5),
    ("create_time_start", BIG), ("create_time_end", -(2**63) - 1), ("bk_scope_id", str(BIG)),
    ("timeout", 2**40), ("script_language", 2**32), ("bk_cloud_id", 2**70),
    ("target_server", {"host_id_list": [1, BIG]}),
    ("target_server", {"ip_list": [{"ip": "127.0.0.2", "bk_cloud_id": BIG}]}),
]


def deep(levels: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value] if kind == "list" else {"a": value}
    return value


async def test_numbers_outside_the_columns_get_1241010_on_every_route(running: Running) -> None:
    """The range is checked at the edge, so SQLite and PostgreSQL answer the same."""
    spec = running.server.app.openapi()
    esb = "/api/c/compapi/v2/jobv3/"
    names = sorted(path[len(esb):] for path in spec["paths"] if path.startswith(esb))
    for name in names:
        for field, value in OUT_OF_RANGE:
            answer = await running.wire.post(V3 + name, {"bk_biz_id": 2, field: value})
            assert answer["code"] == 1241010, (name, field, value, answer)
            assert field in answer["message"], answer
    # query strings and path ids: text that reads as a number too large for its column
    for path, params in (
        (V3 + "get_job_instance_status", {"bk_biz_id": 2, "job_instance_id": str(BIG)}),
        (V3 + "get_job_instance_list", {"bk_biz_id": 2, "start": "3000000000"}),
        (V3 + "get_job_instance_list", {"bk_biz_id": 2, "create_time_start": "1" * 30}),
        # seconds that overflow once made milliseconds
        (V3 + "get_cron_list", {"bk_biz_id": 2, "create_time_start": str(2**62)}),
        (V3 + "get_cron_list", {"bk_biz_id": 2, "last_modify_time_end": str(2**61)}),
        ("/api/jobfleet/v1/audit/entries", {"create_time_start": str(BIG)}),
        ("/api/jobfleet/v1/audit/entries", {"start": "-1", "length": "1e3"}),
        ("/api/jobfleet/v1/audit", {"limit": str(BIG)}),
        (f"/api/jobfleet/v1/templates/{BIG}", {"bk_biz_id": 2}),
        (f"/api/jobfleet/v1/plans/{2**64}", {"bk_biz_id": 2}),
        (f"/api/jobfleet/v1/dynamic-groups/{BIG}", {"bk_biz_id": 2}),
        (f"/api/jobfleet/v1/businesses/{BIG}/notify-configs", {}),
        (f"/api/jobfleet/v1/fetch/{BIG}", {"bk_biz_id": 2}),
        (f"/api/jobfleet/v1/templates/{BIG}/export", {"bk_biz_id": 2}),
    ):
        resp = await running.wire.http.get(path, params=params, headers=running.wire.headers())
        assert resp.status_code == 200, (path, resp.text)
        assert resp.json()["code"] == 1241010, (path, params, resp.json())
    resp = await running.wire.http.get(f"/api/jobfleet/v1/fetch/{BIG}/0_127.0.0.2/etc/hosts",
                                       headers=running.wire.headers())
    assert resp.json()["code"] == 1241010, resp.text
    for method, path in (("PUT", f"/api/jobfleet/v1/topology/sets/{BIG}"),
                         ("DELETE", f"/api/jobfleet/v1/host-whitelist/{-(2**63) - 1}")):
        resp = await running.wire.http.request(method, path, json={"bk_biz_id": 2, "name": "x"},
                                               headers=running.wire.headers())
        assert resp.json()["code"] == 1241010, (path, resp.text)
    # administration calls keep their request details in the audit log: it still renders
    await running.wire.post("/api/jobfleet/v1/businesses", {"bk_biz_id": BIG, "name": "big"})
    await running.wire.post("/api/jobfleet/v1/hosts",
                            {"bk_biz_id": 2, "ip": "127.0.0.5", "bk_cloud_id": 2**64})
    for path in ("/api/jobfleet/v1/audit", "/api/jobfleet/v1/audit/entries"):
        answer = await running.wire.get(path, {})
        assert answer["result"] is True, answer


async def test_deep_and_huge_documents_get_1241010(running: Running) -> None:
    bodies = [
        {"bk_biz_id": 2, "global_var_list": deep(40, "list")},  # past the limit, within orjson's
        {"bk_biz_id": 2, "target_server": deep(40, "dict")},
        {"bk_biz_id": 2, "host_id_list": list(range(100_001))},
    ]
    raw = [b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
           b'{"bk_biz_id": 2, "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"]
    for name in ("fast_execute_script", "execute_job_plan", "get_job_instance_ip_log",
                 "save_cron", "create_script"):
        for body in bodies:
            answer = await running.wire.post(V3 + name, body)
            assert answer["code"] == 1241010, (name, answer)
        for content in raw:
            resp = await running.wire.http.post(V3 + name, content=content,
                                                headers=running.wire.headers())
            assert resp.json()["code"] in (1241010, 1240003), (name, resp.text)
            assert resp.json()["code"] == 1241010 or content.startswith(b"["), resp.text
    for path in ("/api/jobfleet/v1/users", "/api/jobfleet/v1/dynamic-groups",
                 "/api/jobfleet/v1/templates"):
        answer = await running.wire.post(path, {"bk_biz_id": 2, "username": "u",
                                                "filter": deep(10_000 // 20, "dict")})
        assert answer["code"] == 1241010, (path, answer)
    resp = await running.wire.http.post(
        "/api/jobfleet/v1/templates/import", params={"bk_biz_id": 2},
        content=b"[" * 5000 + b"]" * 5000, headers=running.wire.headers())
    assert resp.json()["code"] == 1241010, resp.text
    # a few hundred bytes of nested aliases, a billion values once read
    laughs = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
        f"&{c} [" + ", ".join([f"*{p}"] * 9) + "]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    resp = await running.wire.http.post(
        "/api/jobfleet/v1/templates/import", params={"bk_biz_id": 2},
        content=f"kind: [{', '.join(laughs)}]\n".encode(), headers=running.wire.headers())
    assert resp.json()["code"] == 1240003 and "aliases" in resp.json()["message"], resp.text
    answer = await running.wire.get("/api/jobfleet/v1/audit", {})
    assert answer["result"] is True, answer


async def test_nul_characters_get_1241010_on_both_backends(running: Running) -> None:
    """PostgreSQL cannot store NUL in text or JSON; SQLite can: both refuse it at the edge."""
    for path, body in (
        ("/api/jobfleet/v1/users", {"username": "a\x00b"}),
        ("/api/jobfleet/v1/businesses", {"bk_biz_id": 7, "name": "a\x00b"}),
        ("/api/jobfleet/v1/users", {"username": "nul-key", "note\x00": 1}),
        (V3 + "create_account", {"bk_biz_id": 2, "account": "a\x00", "type": 1, "category": 1}),
        (V3 + "save_cron", {"bk_biz_id": 2, "job_plan_id": 1, "name": "x\x00"}),
    ):
        answer = await running.wire.post(path, body)
        assert answer["code"] == 1241010, (path, answer)
    # inside base64: the script and its parameters are stored as text with the job
    nul = base64.b64encode(b"echo a\x00b").decode()
    for field in ("script_content", "script_param"):
        body = {"bk_biz_id": 2, "script_content": base64.b64encode(b"echo hi").decode(),
                "script_language": 1, "account_alias": "root",
                "target_server": {"ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.1"}]},
                field: nul}
        answer = await running.wire.post(V3 + "fast_execute_script", body)
        assert answer["code"] == 1241010 and field in answer["message"], (field, answer)
    resp = await running.wire.http.get(V3 + "get_job_instance_list", headers=running.wire.headers(),
                                       params={"bk_biz_id": 2, "name": "a\x00b"})
    assert resp.json()["code"] == 1241010, resp.text
    for path in ("/api/jobfleet/v1/audit", "/api/jobfleet/v1/users"):
        answer = await running.wire.get(path, {})
        assert answer["result"] is True, answer
