"""How a call becomes an HTTP request and how an answer becomes data or a ``JobApiError``.

Everything here is free of I/O so the sync and async clients share it exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from jobfleet import __version__
from jobfleet.sdk._errors import TRY_AGAIN_CODES, JobApiError, JobInvalidError, error_type
from jobfleet.sdk._models import Credentials

API_PREFIX = "/api/bk-job/prod/api/v3/"
ADMIN_PREFIX = "/api/jobfleet/v1"
FILES_PATH = ADMIN_PREFIX + "/files"
USER_AGENT = f"jobfleet-sdk/{__version__}"

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

# get_* are queries the gateway serves by GET, except these, which bk-job defines as POST
_POST_QUERIES = frozenset({"get_dangerous_rule_list"})
_GET_ACTIONS = frozenset({"callback_protocol"})

_HTTP_HINTS = {
    401: "authentication rejected: check the app code, secret and user",
    403: "forbidden: the app or user may not call this",
    404: "not found: check the server URL",
}

# the most of one answer a client holds in memory: logs of 500 hosts fit many times over,
# and a server (or something posing as one) that never stops sending is cut off
MAX_ANSWER_BYTES = 256 * 1024 * 1024

# httpx trusts the certifi bundle, or the file this variable names
_PRIVATE_CA_HINT = "for a certificate of a private CA, point SSL_CERT_FILE at the CA's PEM file"


@dataclass(frozen=True)
class RequestSpec:
    method: Method
    path: str
    query: tuple[tuple[str, str], ...] | None = None
    body: dict[str, Any] | None = None


def default_headers(credentials: Credentials, token: str | None = None) -> dict[str, str]:
    """With ``token``, a personal token (which names its own user); app credentials go
    with each request instead (``app_auth``)."""
    auth = {"Authorization": f"Bearer {bearer_token(token)}"} if token else {}
    return {**auth, "Accept": "application/json", "User-Agent": USER_AGENT}


class AppAuth(httpx.Auth):
    """``X-Bkapi-Authorization`` set on each request as it leaves. Among the client's
    default headers it showed in their repr, which hides ``Authorization`` only."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Bkapi-Authorization"] = self._credentials.header_value()
        yield request

    def __repr__(self) -> str:
        return f"AppAuth(app_code={self._credentials.app_code!r})"


def app_auth(credentials: Credentials, token: str | None = None) -> AppAuth | None:
    """The app credentials' auth, unless a personal token stands in for them."""
    return None if token else AppAuth(credentials)


def bearer_token(token: str) -> str:
    """``token`` without the line end a file or a copy left around it; ``ValueError``
    for one no token has, which names no character of it: httpx's own error quoted
    the whole header, secret and all."""
    text = token.strip()
    if not text.isascii() or not text.isprintable() or " " in text:
        raise ValueError("the personal token holds characters no token has: copy it again")
    return text


def api_method(name: str) -> Method:
    if name in _GET_ACTIONS or (name.startswith("get_") and name not in _POST_QUERIES):
        return "GET"
    return "POST"


def bk_request(name: str, params: Mapping[str, Any] | None, method: Method | None) -> RequestSpec:
    method = method or api_method(name)
    clean = drop_none(params or {})
    if method == "GET":
        return RequestSpec(method, API_PREFIX + name, query=tuple(encode_query(clean)))
    return RequestSpec(method, API_PREFIX + name, body=clean)


def admin_request(
    method: Method,
    path: str,
    body: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> RequestSpec:
    if not path.startswith("/"):
        path = "/" + path
    query = tuple(encode_query(drop_none(params))) if params else None
    return RequestSpec(
        method, ADMIN_PREFIX + path, query=query, body=drop_none(body) if body is not None else None
    )


def drop_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def encode_query(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query pairs the way bk-job's Spring backend reads them.

    Booleans are ``true``/``false`` (httpx would send ``True``), a list of scalars
    repeats its key, and anything structured travels as JSON text.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            pairs.extend((key, _query_scalar(item)) for item in value if item is not None)
        else:
            pairs.append((key, _query_scalar(value)))
    return pairs


def _query_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def upload_headers(size: int) -> dict[str, str]:
    # a declared length, not chunked encoding: the server can refuse an oversized
    # file at once, and proxies that buffer chunked bodies pass it through
    return {"Content-Type": "application/octet-stream", "Content-Length": str(size)}


def path_segment(value: object) -> str:
    """``value`` as one segment of a URL path. "." and ".." are refused: httpx resolves
    them as a directory would, so ``/users/../tokens/4`` would be the caller's own
    ``/tokens/4``."""
    text = str(value)
    if text in ("", ".", ".."):
        raise JobInvalidError(-1, f"{text!r} cannot name anything in a URL path")
    return quote(text, safe="")


def download_path(file_id: str) -> str:
    return f"{FILES_PATH}/{path_segment(file_id)}"


DOWNLOAD_HEADERS = {"Accept": "application/octet-stream, application/json"}


def is_file_response(response: httpx.Response) -> bool:
    """Whether a download answered with the file rather than an error envelope.

    Errors can come with HTTP 200, and a file may itself be JSON, so the file
    response's own headers decide.
    """
    if response.status_code != httpx.codes.OK:
        return False
    headers = response.headers
    return "x-jobfleet-sha256" in headers or "content-disposition" in headers


def not_a_file(response: httpx.Response) -> JobApiError:
    """The error of a download answered without the file (read the body first)."""
    try:
        parse_envelope(response)
    except JobApiError as exc:
        return exc
    return JobApiError(-1, f"{_where(response.request)}: the answer is not a file", http_status=200)


class AnswerBudget:
    """The bytes and seconds one answer's body may take once its headers are in.

    httpx's timeouts bound each read, not the whole: a server that sends a byte now
    and then, or never stops, would hold the caller forever or fill its memory.
    """

    def __init__(self, request: httpx.Request, max_bytes: int, seconds: float | None) -> None:
        self._request = request
        self._max_bytes = max_bytes
        self._seconds = seconds
        # no timeout (None, as httpx takes it): no deadline either
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._chunks: list[bytes] = []
        self._size = 0

    def take(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._max_bytes:
            raise JobApiError(
                -1,
                f"{_where(self._request)}: the answer is larger than "
                f"{self._max_bytes} bytes (the client's max_answer_bytes)",
            )
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise JobApiError(
                -1, f"{_where(self._request)}: timed out reading the answer ({self._seconds:g}s)"
            )
        self._chunks.append(chunk)

    def keep(self, response: httpx.Response) -> None:
        """Hand the body read to ``response``, as its own ``read`` would have."""
        response._content = b"".join(self._chunks)


def answer_seconds(timeout: float | httpx.Timeout | None) -> float | None:
    """The seconds a whole answer may take under a client's ``timeout``: the number
    itself, or of an ``httpx.Timeout`` its read timeout."""
    if isinstance(timeout, httpx.Timeout):
        return timeout.read
    return None if timeout is None else float(timeout)


def parse_envelope(response: httpx.Response) -> Any:
    """Return ``data`` of a successful envelope; raise ``JobApiError`` for anything else."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested past what Python decodes
        body = None
    status = response.status_code
    if isinstance(body, dict) and "result" in body:
        if body["result"] is True:
            return body.get("data")
        code = _int_or(body.get("code"), -1)
        code = code if code != 0 else -1
        message = body.get("message") or _http_message(response)
        raise error_type(code, status)(
            code,
            str(message),
            data=body.get("data"),
            permission=body.get("permission"),
            http_status=status,
            request_id=body.get("job_request_id"),
        )
    if status != httpx.codes.OK:
        raise error_type(-1, status)(-1, _http_message(response), http_status=status)
    raise JobApiError(
        -1,
        f"{_where(response.request)}: the answer is not a bk-job envelope ({_excerpt(response)})",
        http_status=status,
    )


def says_try_again(error: JobApiError) -> bool:
    """Whether the server refused for now (busy, throttled) rather than for good."""
    return error.code in TRY_AGAIN_CODES


def transport_error(exc: httpx.RequestError, request: httpx.Request) -> JobApiError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        reason = "timed out" if isinstance(exc, httpx.ConnectTimeout) else str(exc)
        text = f"cannot connect to {request.url.scheme}://{request.url.netloc.decode()}: {reason}"
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            text += f" ({_PRIVATE_CA_HINT})"
        return JobApiError(-1, text)
    where = _where(request)
    if isinstance(exc, httpx.TimeoutException):
        text = f"{where}: timed out"
    else:
        text = f"{where}: {type(exc).__name__}: {exc}"
    if request.method == "POST":
        # sent, but no answer: a job launched twice is worse than a look at the list first
        text += "; the server may have acted on it (a job may have started): check before retrying"
    return JobApiError(-1, text)


def _http_message(response: httpx.Response) -> str:
    status = response.status_code
    text = f"{_where(response.request)}: HTTP {status} {response.reason_phrase}".rstrip()
    hint = _HTTP_HINTS.get(status)
    if hint:
        text += f" ({hint})"
    excerpt = _excerpt(response)
    if excerpt != "empty body":
        text += f": {excerpt}"
    return text


def _where(request: httpx.Request) -> str:
    return f"{request.method} {request.url.path}"


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    text = " ".join(response.text.split())
    if not text:
        return "empty body"
    return text if len(text) <= limit else text[:limit] + "…"


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default
