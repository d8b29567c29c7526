"""The answer of every route: the bk-job envelope."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Envelope(BaseModel):
    result: bool = Field(description="true on success")
    code: int = Field(description="0 on success, else a bk-job error code")
    message: str = Field(description="`success`, or what went wrong")
    job_request_id: str | None = Field(None, description="id of this request, for the logs")
    data: Any = Field(None, description="the operation's answer; absent when there is none")
    permission: dict[str, Any] | None = Field(
        None, description="on 9900403: the permission the user lacks"
    )
