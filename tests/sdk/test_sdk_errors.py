"""Each bk-job error code as the exception a caller can catch by kind."""

from __future__ import annotations

import json
import pickle
import socket
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from tests.sdk.hostile import hostile_server, whole

from jobfleet.domain.errors import ErrorCode
from jobfleet.sdk import (
    JobApiError,
    JobAuthError,
    JobBusyError,
    JobClient,
    JobConflictError,
    JobInvalidError,
    JobNotFoundError,
    JobPermissionError,
    JobWaitTimeout,
)

KINDS: dict[int, type[JobApiError]] = {
    ErrorCode.SERVICE_AUTH_FAIL: JobAuthError,
    ErrorCode.USER_NOT_LOGIN: JobAuthError,
    ErrorCode.PERMISSION_DENIED: JobPermissionError,
    ErrorCode.APP_FORBIDDEN: JobPermissionError,
    ErrorCode.JOB_INSTANCE_NOT_EXIST: JobNotFoundError,
    ErrorCode.JOB_PLAN_NOT_EXIST: JobNotFoundError,
    ErrorCode.NOT_FOUND: JobNotFoundError,
    ErrorCode.INVALID_PARAM_WITH_REASON: JobInvalidError,
    ErrorCode.MISSING_PARAM_WITH_NAME: JobInvalidError,
    ErrorCode.HOST_LIST_EMPTY: JobInvalidError,
    ErrorCode.DANGEROUS_SCRIPT_BLOCKED: JobInvalidError,
    ErrorCode.CONFLICT: JobConflictError,
    ErrorCode.CRON_EXISTS: JobConflictError,
    ErrorCode.SERVICE_UNAVAILABLE: JobBusyError,
    ErrorCode.TOO_MANY_REQUESTS: JobBusyError,
    ErrorCode.RUNNING_JOB_QUOTA_APP: JobBusyError,
    ErrorCode.INTERNAL_ERROR: JobApiError,
    1299999: JobApiError,  # a code of a newer bk-job
}


def answer_the_asked_code(conn: socket.socket, request: str, _body: bytes) -> None:
    """Refuses each call with the code it names as its job (GET ?job_instance_id=)."""
    code = int(parse_qs(urlsplit(request.split()[1]).query)["job_instance_id"][0])
    body = {"result": False, "code": code, "message": f"refused with {code}", "data": None}
    whole("200 OK", json.dumps(body).encode())(conn, request, _body)


@pytest.fixture(scope="module")
def client() -> Iterator[JobClient]:
    """One loopback server and one client for every code: each case is one call of its
    own over the wire, and the module does not start a server and a client (which
    reads the CA bundle) per code."""
    with (
        hostile_server(answer_the_asked_code) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
    ):
        yield client


def refused(client: JobClient, code: int) -> JobApiError:
    with pytest.raises(JobApiError) as caught:
        client.get_job_instance_status(code)
    return caught.value


@pytest.mark.parametrize("code", [c for c in ErrorCode if c != ErrorCode.OK])
def test_every_error_code_is_a_job_api_error_with_its_code_and_message(
    client: JobClient, code: ErrorCode
) -> None:
    error = refused(client, code)
    assert error.code == code
    assert error.message == f"refused with {int(code)}"
    assert str(error) == f"[{int(code)}] refused with {int(code)}"


@pytest.mark.parametrize(("code", "kind"), KINDS.items())
def test_an_error_code_is_raised_as_its_kind(
    client: JobClient, code: int, kind: type[JobApiError]
) -> None:
    assert type(refused(client, code)) is kind


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("401 Unauthorized", JobAuthError),
        ("403 Forbidden", JobPermissionError),
        ("429 Too Many Requests", JobBusyError),
        ("500 Oops", JobApiError),
    ],
)
def test_an_http_refusal_without_an_envelope_is_raised_as_its_kind(
    status: str, kind: type[JobApiError]
) -> None:
    with (
        hostile_server(whole(status, b"<html>no</html>", "text/html")) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
        pytest.raises(JobApiError) as caught,
    ):
        client.whoami()
    assert type(caught.value) is kind
    assert caught.value.code == -1 and caught.value.http_status == int(status.split()[0])


def test_the_errors_cross_a_process_boundary_intact() -> None:
    # concurrent.futures and multiprocessing hand exceptions back pickled
    timeout = pickle.loads(pickle.dumps(JobWaitTimeout(7, 1.5)))
    assert (type(timeout), timeout.job_instance_id, timeout.waited) == (JobWaitTimeout, 7, 1.5)
    assert str(timeout) == "job 7 not finished after 1.5s"
    refusal = JobNotFoundError(1244006, "gone", http_status=200, request_id="r1")
    copy = pickle.loads(pickle.dumps(refusal))
    assert (type(copy), copy.code, copy.message, copy.request_id) == (
        JobNotFoundError,
        1244006,
        "gone",
        "r1",
    )
