"""api/routing.py: how a request becomes a handler's parameters, and a route under every
bk-job path form."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter
from tests.api.support import Parts, build_app, client

from jobfleet.api import errors
from jobfleet.api.params import MAX_DEPTH
from jobfleet.api.route_index import RouteIndex
from jobfleet.api.routing import JOBV3_PREFIXES, Call, add_api
from jobfleet.domain.errors import ErrorCode


async def echo(call: Call) -> Any:
    return call.params


async def test_query_and_body_join_the_body_winning(parts: Parts) -> None:
    async with client(build_app(parts, {"echo": echo})) as http:
        answer = await http.post(
            "/t/echo?a=1&b=query", json={"b": "body", "c": [1]}, headers=parts.headers()
        )
    assert answer.json()["data"] == {"a": "1", "b": "body", "c": [1]}


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (b"{nope", ErrorCode.BAD_REQUEST, "Malformed JSON body"),
        (b"[1, 2]", ErrorCode.BAD_REQUEST, "must be an object"),
        (b'{"a": ' * 300 + b"1" + b"}" * 300, ErrorCode.INVALID_PARAM_WITH_REASON, "nested"),
        (
            b'{"a": ' * (MAX_DEPTH + 2) + b"1" + b"}" * (MAX_DEPTH + 2),
            ErrorCode.INVALID_PARAM_WITH_REASON,
            "nested",
        ),
        (
            b'{"job_instance_id": 99999999999999999999}',
            ErrorCode.INVALID_PARAM_WITH_REASON,
            "outside",
        ),
        (b'{"name": "a\\u0000b"}', ErrorCode.INVALID_PARAM_WITH_REASON, "NUL"),
    ],
)
async def test_bad_bodies_are_refused_before_the_handler(
    parts: Parts, content: bytes, code: int, words: str
) -> None:
    async with client(build_app(parts, {"echo": echo})) as http:
        answer = await http.post(
            "/t/echo",
            content=content,
            headers={**parts.headers(), "content-type": "application/json"},
        )
    body = answer.json()
    assert (body["result"], body["code"]) == (False, code), body
    assert words in body["message"]


async def test_parameters_are_checked_before_the_caller(parts: Parts) -> None:
    """A malformed body is refused as such, credentials or not."""
    async with client(build_app(parts, {"echo": echo})) as http:
        answer = await http.post("/t/echo", content=b"{nope")
    assert answer.json()["code"] == ErrorCode.BAD_REQUEST


async def test_an_api_answers_under_every_prefix_with_and_without_the_slash(
    parts: Parts,
) -> None:
    app = build_app(parts, {})
    router = APIRouter()
    add_api(router, "get_echo", echo, query=True)
    app.include_router(router)
    async with client(app) as http:
        for prefix in JOBV3_PREFIXES:
            for suffix in ("", "/"):
                answer = await http.get(
                    f"{prefix}/get_echo{suffix}", params={"x": "1"}, headers=parts.headers()
                )
                assert answer.json()["data"] == {"x": "1"}, (prefix, suffix)
    # documented once, under the first prefix
    documented = [p for p in app.openapi()["paths"] if p.endswith("get_echo")]
    assert documented == [f"{JOBV3_PREFIXES[0]}/get_echo"]


@pytest.mark.parametrize("through", ["app", "index"])
async def test_every_path_form_of_an_api_on_the_apps_router(parts: Parts, through: str) -> None:
    """The forms the API registers on the app's own router: each answers its methods,
    whether the route index or the router finds it, and refuses others with the envelope."""
    app = build_app(parts, {})
    add_api(app.router, "get_echo", echo, query=True)
    add_api(app.router, "do_echo", echo, query=False)
    if through == "index":
        app.add_middleware(RouteIndex, routes=app.router.routes, on_error=errors.answer)
    async with client(app) as http:
        for prefix in JOBV3_PREFIXES:
            for suffix in ("", "/"):
                for method in ("GET", "POST"):
                    answer = await http.request(
                        method, f"{prefix}/get_echo{suffix}", params={"x": "1"},
                        headers=parts.headers(),
                    )
                    assert answer.json()["data"] == {"x": "1"}, (prefix, suffix, method)
                posted = await http.post(
                    f"{prefix}/do_echo{suffix}", json={"y": 2}, headers=parts.headers()
                )
                assert posted.json()["data"] == {"y": 2}
                for method, path in (("GET", "do_echo"), ("HEAD", "do_echo"),
                                     ("PUT", "get_echo")):
                    refused = await http.request(
                        method, f"{prefix}/{path}{suffix}", headers=parts.headers()
                    )
                    assert refused.status_code == 405, (method, prefix, path, suffix)
                    if method != "HEAD":
                        assert refused.json()["result"] is False
    documented = sorted(p for p in app.openapi()["paths"] if "_echo" in p)
    assert documented == [f"{JOBV3_PREFIXES[0]}/do_echo", f"{JOBV3_PREFIXES[0]}/get_echo"]
