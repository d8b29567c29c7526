"""api/errors.py: every JobError a route raises becomes the bk-job envelope, refusals are
audited with who was refused, and a failure that is not the caller's is logged."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from tests.api.support import APP, USER, Parts, build_app, client

from jobfleet.api.errors import audited
from jobfleet.api.routing import Call
from jobfleet.domain.errors import ErrorCode, JobError


async def refuse(call: Call) -> Any:
    raise JobError(ErrorCode.PERMISSION_DENIED, "not yours", http_status=403, data={"x": 1})


async def bad_input(call: Call) -> Any:
    raise JobError.invalid("bk_biz_id", "not a business")


async def crash(call: Call) -> Any:
    raise RuntimeError("a bug")


async def ok(call: Call) -> Any:
    return {"user": call.caller.username}


async def text(call: Call) -> Response:
    return PlainTextResponse("kind: jobfleet/template\n")


async def self_audited(call: Call) -> Any:
    audited(call.request)
    raise JobError(ErrorCode.PERMISSION_DENIED, "audited by the handler", http_status=403)


ROUTES = {
    "refuse": refuse,
    "bad_input": bad_input,
    "crash": crash,
    "ok": ok,
    "text": text,
    "self_audited": self_audited,
}


async def test_a_refusal_is_the_envelope_and_is_audited_with_the_caller(parts: Parts) -> None:
    async with client(build_app(parts, ROUTES)) as http:
        answer = await http.post("/t/refuse", json={}, headers=parts.headers())
    assert answer.status_code == 403
    body = answer.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body.pop("job_request_id"))
    assert body == {
        "result": False,
        "code": ErrorCode.PERMISSION_DENIED,
        "message": "not yours",
        "data": {"x": 1},
    }
    await parts.audit.flush()
    [entry] = await parts.audit.recent(10)
    assert entry["action"] == "refused"
    assert (entry["app_code"], entry["username"], entry["source_ip"]) == (APP, USER, "127.1.2.3")
    assert entry["detail"]["reason"] == "permission_denied"
    assert entry["detail"]["path"] == "/t/refuse"


async def test_bad_input_is_answered_but_not_audited(parts: Parts) -> None:
    async with client(build_app(parts, ROUTES)) as http:
        answer = await http.get("/t/bad_input", headers=parts.headers())
    assert answer.status_code == 200
    assert answer.json()["code"] == ErrorCode.INVALID_PARAM_WITH_REASON
    assert "[bk_biz_id]" in answer.json()["message"]
    assert await parts.audit.recent(10) == []


async def test_a_refused_stranger_is_audited_without_a_name(parts: Parts) -> None:
    async with client(build_app(parts, ROUTES)) as http:
        answer = await http.get("/t/ok", headers=parts.headers(bk_app_secret="wrong"))
    assert answer.status_code == 401
    assert answer.json()["code"] == ErrorCode.SERVICE_AUTH_FAIL
    await parts.audit.flush()
    [entry] = await parts.audit.recent(10)
    assert (entry["app_code"], entry["username"]) == ("", "")
    assert entry["detail"]["reason"] == "bad_credentials"


async def test_a_handler_that_audited_its_refusal_is_not_audited_twice(parts: Parts) -> None:
    async with client(build_app(parts, ROUTES)) as http:
        answer = await http.get("/t/self_audited", headers=parts.headers())
    assert answer.json()["message"] == "audited by the handler"
    await parts.audit.flush()
    assert await parts.audit.recent(10) == []


async def test_a_crash_is_an_internal_error_naming_the_request(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "jobfleet.api.errors")
    async with client(build_app(parts, ROUTES)) as http:
        answer = await http.get("/t/crash", headers=parts.headers())
    body = answer.json()
    assert answer.status_code == 200
    assert body["code"] == ErrorCode.INTERNAL_ERROR
    # the id the caller is told is the one the log holds, beside the traceback
    assert body["message"] == f"Internal error (request {body['job_request_id']})"
    assert "a bug" not in answer.text
    [record] = caplog.records
    assert f"request_id={body['job_request_id']}" in record.getMessage()
    assert record.exc_info is not None


async def test_success_is_the_envelope_and_a_response_passes_through(parts: Parts) -> None:
    async with client(build_app(parts, ROUTES)) as http:
        answer = await http.get("/t/ok", headers=parts.headers())
        document = await http.get("/t/text", headers=parts.headers())
    body = answer.json()
    assert body["result"] is True and body["code"] == 0 and body["message"] == "success"
    assert body["data"] == {"user": USER}
    assert document.text == "kind: jobfleet/template\n"
    assert document.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/nowhere", 404, "No API at /nowhere"),
        ("PUT", "/t/ok", 405, "Method PUT is not allowed on /t/ok"),
    ],
)
async def test_starlette_errors_are_the_envelope(
    parts: Parts, method: str, path: str, status: int, message: str
) -> None:
    async with client(build_app(parts, ROUTES)) as http:
        answer = await http.request(method, path)
    assert answer.status_code == status
    body = answer.json()
    assert (body["result"], body["code"]) == (False, ErrorCode.BAD_REQUEST)
    assert body["message"] == message


async def test_a_raw_endpoint_raising_gets_the_envelope_too(parts: Parts) -> None:
    app = build_app(parts, {})

    async def raw(request: Request) -> Response:
        raise JobError(ErrorCode.NOT_FOUND, "No file x", http_status=404)

    app.add_api_route("/raw", raw, methods=["GET"])
    async with client(app) as http:
        answer = await http.get("/raw")
    assert answer.status_code == 404
    assert answer.json()["message"] == "No file x"
