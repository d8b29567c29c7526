"""api/auth.py: who is calling, from the X-Bkapi-Authorization header (or the ESB form's
fields), checked against the identity store."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.requests import Request
from tests.api.support import APP, USER, Parts

from jobfleet.api.auth import Authenticator
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.throttle import Throttle


def request(
    path: str = "/api/bk-job/prod/api/v3/get_job_instance_status",
    header: Any = None,
    query: bytes = b"",
) -> Request:
    headers = []
    if header is not None:
        raw = header if isinstance(header, str) else json.dumps(header)
        headers.append((b"x-bkapi-authorization", raw.encode()))
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": headers,
            "query_string": query,
            "client": ("127.0.0.9", 4000),
        }
    )


def fields(parts: Parts, **override: Any) -> dict[str, Any]:
    return {"bk_app_code": APP, "bk_app_secret": parts.secret, "bk_username": USER, **override}


async def refused(
    auth: Authenticator, req: Request, params: dict[str, Any] | None = None, need_user: bool = True
) -> JobError:
    with pytest.raises(JobError) as caught:
        await auth.authenticate(req, params or {}, need_user=need_user)
    return caught.value


async def test_a_good_header_names_the_app_and_user_and_marks_the_request(parts: Parts) -> None:
    req = request(header=fields(parts))
    caller = await parts.auth.authenticate(req, {})
    assert (caller.app_code, caller.username, caller.is_admin) == (APP, USER, False)
    # the error handler audits later refusals of this request by this name
    assert req.state.caller is caller


@pytest.mark.parametrize(
    ("header", "code", "status", "words"),
    [
        ("{not json", ErrorCode.SERVICE_AUTH_FAIL, 401, "not valid JSON"),
        ("[1, 2]", ErrorCode.SERVICE_AUTH_FAIL, 401, "must be a JSON object"),
        ({"bk_app_secret": "x"}, ErrorCode.MISSING_APP_CODE, 401, "Missing app code"),
        ({"bk_app_code": APP}, ErrorCode.SERVICE_AUTH_FAIL, 401, "missing app secret"),
        (
            {"bk_app_code": APP, "bk_app_secret": "wrong"},
            ErrorCode.SERVICE_AUTH_FAIL,
            401,
            "wrong app code or secret",
        ),
        (None, ErrorCode.MISSING_APP_CODE, 401, "Missing app code"),
    ],
)
async def test_bad_credentials_are_refused(
    parts: Parts, header: Any, code: int, status: int, words: str
) -> None:
    exc = await refused(parts.auth, request(header=header))
    assert (exc.code, exc.http_status) == (code, status)
    assert words in exc.message


async def test_the_secret_is_never_taken_from_the_query_string(parts: Parts) -> None:
    query = f"bk_app_secret={parts.secret}".encode()
    exc = await refused(parts.auth, request(header=fields(parts), query=query))
    assert exc.code == ErrorCode.SERVICE_AUTH_FAIL
    assert "query string" in exc.message


async def test_the_esb_path_takes_credentials_from_the_parameters(parts: Parts) -> None:
    req = request(path="/api/c/compapi/v2/jobv3/get_job_instance_status")
    caller = await parts.auth.authenticate(req, fields(parts))
    assert caller.username == USER
    # the gateway path form does not
    exc = await refused(parts.auth, request(), fields(parts))
    assert exc.code == ErrorCode.MISSING_APP_CODE


async def test_a_user_is_needed_unless_the_route_says_not(parts: Parts) -> None:
    header = fields(parts)
    del header["bk_username"]
    exc = await refused(parts.auth, request(header=header))
    assert exc.code == ErrorCode.MISSING_USER
    caller = await parts.auth.authenticate(request(header=header), {}, need_user=False)
    assert caller.username == ""


async def test_an_app_names_only_its_users(parts: Parts) -> None:
    exc = await refused(parts.auth, request(header=fields(parts, bk_username="mallory")))
    assert exc.code == ErrorCode.PERMISSION_DENIED
    assert "mallory" in exc.message


async def test_failures_from_one_address_are_throttled(parts: Parts) -> None:
    auth = Authenticator(parts.identity, failures=Throttle("failed authentications", 0.001, 2))
    bad = fields(parts, bk_app_secret="wrong")
    for _ in range(2):
        assert (await refused(auth, request(header=bad))).code == ErrorCode.SERVICE_AUTH_FAIL
    # the address has used its failures: even a good secret never seen before waits
    exc = await refused(auth, request(header=fields(parts)))
    assert exc.http_status == 429


async def test_an_app_deleted_through_another_node_is_refused_within_seconds(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two nodes on one database: the node that deletes the app forgets it at once, the
    # other only learns of it when its remembered credentials are read again
    other = Authenticator(parts.identity)
    clock = [1000.0]
    monkeypatch.setattr("jobfleet.api.auth.time.monotonic", lambda: clock[0])
    assert (await other.authenticate(request(header=fields(parts)), {})).app_code == APP
    await parts.identity.delete_app(APP)
    clock[0] += 3.5
    exc = await refused(other, request(header=fields(parts)))
    assert exc.code == ErrorCode.SERVICE_AUTH_FAIL
