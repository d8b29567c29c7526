"""What the two clients share besides their operations: construction, and how a flow
of ``Flows`` becomes a method with the flow's own parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from jobfleet.sdk._events import env_settings
from jobfleet.sdk._models import Credentials
from jobfleet.sdk._ops import Flows
from jobfleet.sdk._steps import Flow
from jobfleet.sdk._transport import (
    MAX_ANSWER_BYTES,
    AnswerBudget,
    Method,
    answer_seconds,
    app_auth,
    default_headers,
)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
X = TypeVar("X")

# an operation of Flows, taking the client's Flows first
FlowOf = Callable[Concatenate[Flows, P], Flow[T]]


class Operation(Generic[P, R]):
    """A class attribute that is, on a client, ``bind(client)``: a method with the
    flow's parameters returning ``R`` (the result, or a coroutine of it)."""

    def __init__(self, flow: Callable[..., Any], bind: Callable[[Any], Callable[P, R]]) -> None:
        self._bind = bind
        self.__name__ = flow.__name__
        self.__doc__ = flow.__doc__
        # help() and editors show the flow's parameters, without its Flows
        signature = inspect.signature(flow)
        self.__signature__ = signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,
        )

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Operation[P, R]: ...

    @overload
    def __get__(self, client: object, owner: type[Any]) -> Callable[P, R]: ...

    def __get__(self, client: object, owner: type[Any]) -> Operation[P, R] | Callable[P, R]:
        if client is None:
            return self
        method = self._bind(client)
        method.__name__ = self.__name__
        method.__doc__ = self.__doc__
        method.__signature__ = self.__signature__  # type: ignore[attr-defined]
        return method


def server_url(text: str) -> str:
    """A server's base URL without its trailing slash; ``ValueError`` (not httpx's own
    error, and not at the first call) when it cannot be one."""
    url = str(text).strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"server URL {text!r} is not valid: {exc}") from None
    if parsed.port is not None and parsed.port > 65535:
        raise ValueError(f"server URL {text!r} is not valid: port {parsed.port}")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"server URL {text!r}: give http://HOST[:PORT] or https://HOST[:PORT]")
    return url


class ClientBase(Generic[X]):
    """A client's address, credentials and default business; ``X`` is its transport."""

    def __init__(
        self,
        base_url: str,
        app_code: str,
        app_secret: str,
        username: str,
        *,
        biz: int | str | None = None,
        timeout: float | httpx.Timeout | None = 30.0,
        verify: bool = True,
        transport: X | None = None,
        token: str | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.base_url = server_url(base_url)
        # ``timeout`` bounds each network wait, and also the reading of a whole answer
        self._answer_seconds = answer_seconds(timeout)
        self._max_answer_bytes = max_answer_bytes
        self.credentials = Credentials(app_code, app_secret, username)
        self.biz = biz
        self._flows = Flows(lambda: self.biz)
        self._connect(
            {
                "base_url": self.base_url,
                "headers": default_headers(self.credentials, token),
                "auth": app_auth(self.credentials, token),
                "timeout": timeout,
                "verify": verify,
                "transport": transport,
            }
        )

    @classmethod
    def with_token(cls, base_url: str, token: str, **options: Any) -> Self:
        """A client that authenticates with a personal token (``jobfleet token create``)
        instead of app credentials, acting as the token's user."""
        return cls(base_url, "", "", "", token=token, **options)

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """A client with the CLI's settings: JOBFLEET_SERVER, JOBFLEET_TOKEN (a personal
        token) or JOBFLEET_APP_CODE and JOBFLEET_APP_SECRET (or JOBFLEET_BOOTSTRAP),
        JOBFLEET_USERNAME, JOBFLEET_BIZ."""
        values = env_settings()
        biz = values.pop("biz")
        token = values.pop("token", None)
        if token:
            return cls.with_token(values["base_url"], token, biz=biz, **options)
        return cls(**values, biz=biz, **options)

    def _connect(self, options: dict[str, Any]) -> None:
        """Open the HTTP client with ``options``."""
        raise NotImplementedError

    def _budget(self, response: httpx.Response) -> AnswerBudget:
        return AnswerBudget(response.request, self._max_answer_bytes, self._answer_seconds)

    def _run(self, flow: Flow[Any]) -> Any:
        """Walk ``flow``: its result (sync), or an awaitable of it (async)."""
        raise NotImplementedError

    # the call groups' requests (``_api``, ``_admin``), walked by the client's ``_run``

    def _bk(self, name: str, params: dict[str, Any]) -> Any:
        return self._run(self._flows._bk(name, params))

    def _admin_dict(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        return self._run(self._flows.admin_dict(method, path, body, params))

    def _admin_list(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._run(self._flows.admin_list(path, params))

    def _admin_text(self, path: str, params: dict[str, Any]) -> Any:
        return self._run(self._flows.admin_text(path, params))

    def _admin_send_text(self, path: str, text: str, params: dict[str, Any]) -> Any:
        return self._run(self._flows.admin_send_text(path, text, params))
