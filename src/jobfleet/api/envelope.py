"""The bk-job response envelope: ``{result, code, message, data, job_request_id}``."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from jobfleet.domain.errors import JobError


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


def error(exc: JobError, request_id: str) -> Response:
    body: dict[str, Any] = {
        "result": False,
        "code": exc.code,
        "message": exc.message,
        "job_request_id": request_id,
    }
    if exc.data is not None:
        body["data"] = exc.data
    if exc.permission is not None:
        body["permission"] = exc.permission
    return JSONBody(body, status_code=exc.http_status)
