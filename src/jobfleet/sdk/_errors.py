"""The exceptions the SDK raises: a failed call, a wait that ran out, unusable settings."""

from __future__ import annotations

from typing import Any


class JobApiError(Exception):
    """The server said no (``result: false``), or gave no usable answer.

    ``code`` is the bk-job error code from the envelope, or -1 when there was no
    envelope (connection failure, non-JSON body, HTTP error without one).
    """

    def __init__(
        self,
        code: int,
        message: str,
        data: Any = None,
        permission: dict[str, Any] | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.data = data
        self.permission = permission
        self.http_status = http_status
        self.request_id = request_id

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class JobWaitTimeout(TimeoutError):
    """A job did not finish within the caller's ``wait_timeout``; it keeps running."""

    def __init__(self, job_instance_id: int, waited: float) -> None:
        super().__init__(f"job {job_instance_id} not finished after {waited:.1f}s")
        self.job_instance_id = job_instance_id
        self.waited = waited


class JobConfigError(ValueError):
    """``from_env()`` found no usable settings: a config or bootstrap file that cannot be
    read or parsed (the message names the file and what is wrong), or no credentials."""
