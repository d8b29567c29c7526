"""The exceptions the SDK raises: a failed call, a wait that ran out, unusable settings."""

from __future__ import annotations

from typing import Any

from jobfleet.domain.errors import ErrorCode


class JobApiError(Exception):
    """The server said no (``result: false``), or gave no usable answer.

    ``code`` is the bk-job error code from the envelope, or -1 when there was no
    envelope (connection failure, non-JSON body, HTTP error without one). Refusals of
    a kind are raised as a subclass: ``JobAuthError``, ``JobPermissionError``,
    ``JobNotFoundError``, ``JobInvalidError``, ``JobConflictError``, ``JobBusyError``.
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


class JobAuthError(JobApiError):
    """The credentials were refused: a wrong or missing app code, secret, user or token."""


class JobPermissionError(JobApiError):
    """The caller is known but may not do this; ``permission`` says what is missing."""


class JobNotFoundError(JobApiError):
    """What the call names does not exist: a job, step, plan, script, cron, host, ..."""


class JobInvalidError(JobApiError):
    """The call's parameters were refused, by the server or (code -1) before anything
    was sent; the message names the one at fault."""


class JobConflictError(JobApiError):
    """The call clashes with the current state: it exists already, it has started, ..."""


class JobBusyError(JobApiError):
    """The server refused for now: busy, throttled, or a quota of running jobs is full.
    Asking again later may succeed."""


# the server's own "not now": busy (its in-flight limit, a database restarting) or
# throttled; a read may be asked again at once (a full quota is busy too, but not this)
TRY_AGAIN_CODES = frozenset({ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.TOO_MANY_REQUESTS})

_BY_CODE: dict[int, type[JobApiError]] = {
    **dict.fromkeys(
        (
            ErrorCode.SERVICE_AUTH_FAIL,
            ErrorCode.USER_NOT_LOGIN,
            ErrorCode.MISSING_USER,
            ErrorCode.MISSING_APP_CODE,
        ),
        JobAuthError,
    ),
    **dict.fromkeys(
        (
            ErrorCode.PERMISSION_DENIED,
            ErrorCode.APP_FORBIDDEN,
            ErrorCode.ACCOUNT_NO_PERMISSION,
            ErrorCode.NOT_IN_CONFIRM_USERS,
        ),
        JobPermissionError,
    ),
    **dict.fromkeys(
        (
            ErrorCode.IP_NOT_IN_CMDB,
            ErrorCode.HOST_ID_NOT_IN_CMDB,
            ErrorCode.SCRIPT_NOT_IN_BIZ,
            ErrorCode.FILE_SOURCE_NOT_IN_BIZ,
            ErrorCode.GSE_AGENT_NOT_FOUND,
            ErrorCode.NOT_FOUND,
        ),
        JobNotFoundError,
    ),
    **dict.fromkeys(
        (
            ErrorCode.CONFLICT,
            ErrorCode.CRON_EXISTS,
            ErrorCode.FILE_SOURCE_CODE_EXISTS,
            ErrorCode.JOB_ALREADY_STARTED,
            ErrorCode.TASK_ALREADY_TERMINATING,
        ),
        JobConflictError,
    ),
    **dict.fromkeys(
        (
            *TRY_AGAIN_CODES,
            ErrorCode.RUNNING_JOB_QUOTA_SCOPE,
            ErrorCode.RUNNING_JOB_QUOTA_APP,
        ),
        JobBusyError,
    ),
}
# the rest by bk-job's naming; a failure on the server's side stays a plain JobApiError
_INVALID_WORDS = ("INVALID", "MISSING", "EMPTY", "EXCEED", "TOO_LARGE", "ILLEGAL", "SUPPORTED")
_INVALID_CODES = frozenset(
    {
        ErrorCode.BAD_REQUEST,
        ErrorCode.CRON_TIME_PASSED,
        ErrorCode.SCRIPT_VERSION_DISABLED,
        ErrorCode.SCRIPT_NOT_EXECUTABLE,
        ErrorCode.DANGEROUS_SCRIPT_BLOCKED,
    }
)
_BY_HTTP_STATUS: dict[int, type[JobApiError]] = {
    401: JobAuthError,
    403: JobPermissionError,
    429: JobBusyError,
}


def error_type(code: int, http_status: int | None = None) -> type[JobApiError]:
    """The ``JobApiError`` class of a bk-job error code (or, for an answer without an
    envelope, of its HTTP status)."""
    if code == -1:
        return _BY_HTTP_STATUS.get(http_status or 0, JobApiError)
    if code in _BY_CODE:
        return _BY_CODE[code]
    try:
        name = ErrorCode(code).name
    except ValueError:  # a code of a newer bk-job
        return JobApiError
    if "NOT_EXIST" in name or "NOT_FOUND" in name:
        return JobNotFoundError
    if code in _INVALID_CODES or any(word in name for word in _INVALID_WORDS):
        return JobInvalidError
    return JobApiError


class JobWaitTimeout(TimeoutError):
    """A job did not finish within the caller's ``wait_timeout``; it keeps running."""

    def __init__(self, job_instance_id: int, waited: float) -> None:
        super().__init__(f"job {job_instance_id} not finished after {waited:.1f}s")
        self.job_instance_id = job_instance_id
        self.waited = waited

    def __reduce__(self) -> tuple[type[JobWaitTimeout], tuple[int, float]]:
        # rebuilt from its fields, not its message: it crosses process pools intact
        return (type(self), (self.job_instance_id, self.waited))


class JobConfigError(ValueError):
    """``from_env()`` found no usable settings: a config or bootstrap file that cannot be
    read or parsed (the message names the file and what is wrong), or no credentials."""
