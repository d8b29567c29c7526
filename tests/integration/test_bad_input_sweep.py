"""Every bk-job route, fed wrong types and junk: always the envelope, never an internal error."""

from __future__ import annotations

import warnings
from typing import Any

from tests.integration.harness import Running

V3 = "/api/bk-job/prod/api/v3/"
# fields the APIs read, each given a value of a type it does not take
JUNK: dict[str, Any] = {
    name: value
    for name, value in (
        ("job_instance_id", {"x": 1}), ("step_instance_id", [1]), ("job_plan_id", "plan"),
        ("id", {"id": 1}), ("script_id", {"a": 1}), ("script_version_id", "v"),
        ("global_var_list", [{"id": "x", "server": "nope"}, 5, None]),
        ("target_server", {"ip_list": "1.2.3.4", "host_id_list": [{"a": 1}]}),
        ("rolling_config", {"expression": 5, "mode": "fast"}),
        ("script_language", [1]), ("script_content", 5), ("content", {"b": 64}),
        ("operation_code", "stop"), ("expression", ["* * * * *"]), ("execute_time", "soon"),
        ("execute_time_zone", 5), ("status", [1]), ("start", "first"), ("length", {"n": 1}),
        ("file_source_list", {"file_list": "x"}), ("file_target_path", 5),
        ("account_alias", {"a": 1}), ("account_id", "root"), ("name", {"n": 1}),
        ("version", ["1"]), ("script_language_list", "shell"), ("action", "block"),
        ("category", "system"), ("type", "linux"), ("execute_count", "last"),
        ("return_ip_result", {"x": 1}), ("ip_list", "1.2.3.4"), ("host_id_list", "1"),
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
