"""The bk-job response envelope: ``{result, code, message, data, job_request_id}``."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response

from jobfleet.domain.errors import JobError
from jobfleet.domain.messages import localize


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def ok(data: Any, request_id: str) -> Response:
    body: dict[str, Any] = {
        "result": True,
        "code": 0,
        "message": "success",
        "job_request_id": request_id,
    }
    if data is not None:
        body["data"] = data
    return JSONBody(body)


def request_language(request: HTTPConnection) -> str | None:
    """The language a client asks for: BlueKing's ``blueking-language`` header, else
    ``Accept-Language``."""
    return request.headers.get("blueking-language") or request.headers.get("accept-language")


def error(exc: JobError, request_id: str, language: str | None = None) -> Response:
    """The failure envelope, its message in ``language`` (bk-job's Chinese for ``zh-*``)."""
    body: dict[str, Any] = {
        "result": False,
        "code": exc.code,
        "message": localize(exc.code, exc.message, language),
        "job_request_id": request_id,
    }
    if exc.data is not None:
        body["data"] = exc.data
    if exc.permission is not None:
        body["permission"] = exc.permission
    return JSONBody(body, status_code=exc.http_status)
