"""Who is calling: the app (authenticated) and the user it acts for (authorized per scope)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import HTTPConnection

from jobfleet.domain.callers import CONSOLE_APP_CODE, TOKEN_APP_CODE, has_control
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScopeType
from jobfleet.domain.throttle import Throttle
from jobfleet.store.identity import App, IdentityStore, User
from jobfleet.store.people import PeopleStore
from jobfleet.store.secrets import hash_secret

ESB_PREFIX = "/api/c/compapi/"
# people: a console session cookie (with a CSRF header on every change) or a
# personal token (``Authorization: Bearer jfp_…``); both act in the user's own scopes
SESSION_COOKIE = "jobfleet_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONSOLE_APP = App(CONSOLE_APP_CODE, is_admin=True)
TOKEN_APP = App(TOKEN_APP_CODE, is_admin=True)


@dataclass
class Caller:
    app_code: str
    user: User
    app: App
    # when the request came with a personal token: the token's expiry (epoch seconds)
    token_expires_at: float | None = None

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def is_admin(self) -> bool:
        """Administration needs an administrator named by an administration app."""
        return self.user.is_admin and self.app.is_admin

    def holds(self, scope_type: str, scope_id: str, biz_ids: set[int] | None = None) -> bool:
        """The user holds the scope and the app may touch its businesses."""
        if not self.user.holds(scope_type, scope_id):
            return False
        if self.app.biz is None:
            return True
        if biz_ids is None:
            try:
                biz_ids = {int(scope_id)} if scope_type == ScopeType.BIZ else None
            except ValueError:
                return False
        return biz_ids is not None and self.app.may_touch(biz_ids)


def _refuse_nul(value: str, name: str) -> None:
    """The header's JSON may spell a NUL (``\\u0000``), which no user or app name holds
    and PostgreSQL cannot even compare: refused as a wrong credential."""
    if "\x00" in value:
        raise JobError(
            ErrorCode.SERVICE_AUTH_FAIL, f"{name} holds a NUL character", http_status=401
        )


def _refuse_control(value: str, name: str) -> None:
    """No BlueKing user is named with a control character (a newline, a bidi override):
    such a name would carry it into the audit trail and every record made in its name."""
    _refuse_nul(value, name)
    if has_control(value):
        raise JobError(
            ErrorCode.SERVICE_AUTH_FAIL, f"{name} holds a control character", http_status=401
        )


def app_refused(app: App, what: str) -> JobError:
    return JobError(ErrorCode.PERMISSION_DENIED, f"App {app.app_code!r} {what}")


class Authenticator:
    """Checks credentials; remembers good ones briefly so that polling stays cheap."""

    def __init__(
        self,
        identity: IdentityStore,
        # as short as a user's: another node's change to an app (deleted, disabled, its
        # businesses or users) reaches this node only through the database
        app_ttl: float = 3.0,
        user_ttl: float = 3.0,
        failures: Throttle | None = None,
        people: PeopleStore | None = None,
    ) -> None:
        self.identity = identity
        self.people = people
        # wrong credentials per source address; credentials once verified still pass
        self.failures = failures or Throttle("failed authentications", 0, 1)
        self.app_ttl = app_ttl
        self.user_ttl = user_ttl
        self._apps: dict[tuple[str, str], tuple[App, float]] = {}
        self._users: dict[str, tuple[User, float]] = {}
        self._agents: dict[tuple[str, str], tuple[int, float]] = {}

    def forget(self) -> None:
        self._apps.clear()
        self._users.clear()
        self._agents.clear()

    async def authenticate(
        self, request: HTTPConnection, params: dict[str, Any], *, need_user: bool = True
    ) -> Caller:
        header = request.headers.get("x-bkapi-authorization")
        if not header and self.people is not None:
            person = await self.person(request)
            if person is not None:
                return person
        fields: dict[str, Any] = {}
        if header:
            try:
                parsed = orjson.loads(header)
            except orjson.JSONDecodeError:
                raise JobError(
                    ErrorCode.SERVICE_AUTH_FAIL,
                    "X-Bkapi-Authorization is not valid JSON",
                    http_status=401,
                ) from None
            if not isinstance(parsed, dict):
                raise JobError(
                    ErrorCode.SERVICE_AUTH_FAIL,
                    "X-Bkapi-Authorization must be a JSON object",
                    http_status=401,
                )
            fields = parsed
        if "bk_app_secret" in request.query_params:
            # a query string ends up in access logs, proxies and browser history
            raise JobError(
                ErrorCode.SERVICE_AUTH_FAIL,
                "bk_app_secret is not accepted in the query string: send it in the "
                "X-Bkapi-Authorization header",
                http_status=401,
            )
        if not header and request.url.path.startswith(ESB_PREFIX):
            fields = {k: params.get(k) for k in ("bk_app_code", "bk_app_secret", "bk_username")}
        app_code = fields.get("bk_app_code")
        secret = fields.get("bk_app_secret")
        if not app_code and request.headers.get(CSRF_HEADER) and self.people is not None:
            # only the console's pages send a CSRF token: with no cookie, their session
            # ended (a logout in another tab, or its time was up and the browser dropped it)
            raise JobError(
                ErrorCode.SERVICE_AUTH_FAIL,
                "The console session has ended: log in again",
                http_status=401,
            )
        if not app_code or not isinstance(app_code, str):
            raise JobError(
                ErrorCode.MISSING_APP_CODE, "Missing app code (bk_app_code)", http_status=401
            )
        if not secret or not isinstance(secret, str):
            raise JobError(
                ErrorCode.SERVICE_AUTH_FAIL,
                f"App {app_code!r}: missing app secret (bk_app_secret)",
                http_status=401,
            )
        _refuse_nul(app_code, "bk_app_code")
        app = await self._check_app(app_code, secret, request.client.host if request.client else "")
        username = (
            fields.get("bk_username")
            or request.headers.get("x-bk-username")
            or params.get("bk_username")
        )
        if not username or not isinstance(username, str):
            if need_user:
                raise JobError(
                    ErrorCode.MISSING_USER,
                    "Missing user: send bk_username in X-Bkapi-Authorization",
                )
            username = ""
        _refuse_control(username, "bk_username")
        if username and not app.may_name(username):
            raise app_refused(app, f"may not act for user {username!r}")
        caller = Caller(app_code, await self._user(username), app)
        # whoever is refused later in this request is audited by name (api/errors.py)
        request.state.caller = caller
        return caller

    async def person(self, request: HTTPConnection) -> Caller | None:
        """The user of a personal token or a console session, None when neither is sent."""
        assert self.people is not None
        source = request.client.host if request.client else ""
        bearer = request.headers.get("authorization", "")
        if bearer[:7].lower() == "bearer ":
            self.failures.check(source)
            held = await self.people.token_holder(bearer[7:].strip())
            if held is None:
                self.failures.take(source)
                raise JobError(
                    ErrorCode.SERVICE_AUTH_FAIL,
                    "The personal token is wrong, revoked or expired",
                    http_status=401,
                )
            username, expires_at = held
            user = await self._user(username)
            return Caller(TOKEN_APP.app_code, user, TOKEN_APP, token_expires_at=expires_at)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        session = await self.people.session(cookie)
        if session is None:
            raise JobError(
                ErrorCode.SERVICE_AUTH_FAIL,
                "The console session has ended: log in again",
                http_status=401,
            )
        method = request.scope.get("method", "GET")
        # compared as bytes: a header may hold any (latin-1) character, and comparing
        # text past ASCII is a TypeError
        if method not in SAFE_METHODS and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, "").encode(), session.csrf.encode()
        ):
            raise JobError(
                ErrorCode.PERMISSION_DENIED,
                "Missing or wrong X-CSRF-Token for a change made with a console session",
                http_status=403,
            )
        return Caller(CONSOLE_APP.app_code, await self._user(session.username), CONSOLE_APP)

    async def agent(self, agent_id: str, secret: str, source: str = "") -> int | None:
        """The host of an agent credential (cached briefly: agents make many requests)."""
        key = (agent_id, hash_secret(secret))
        now = time.monotonic()
        cached = self._agents.get(key)
        if cached and cached[1] > now:
            return cached[0]
        if cached is None:
            # only credentials never seen good wait out an address's failures
            self.failures.check(source)
        host = await self.identity.check_agent(agent_id, secret)
        if host is not None:
            self._agents[key] = (host, now + self.user_ttl)
        else:
            self.failures.take(source)
        return host

    async def _check_app(self, app_code: str, secret: str, source: str) -> App:
        key = (app_code, hash_secret(secret))
        now = time.monotonic()
        cached = self._apps.get(key)
        if cached and cached[1] > now:
            return cached[0]
        if cached is None:
            # only credentials never seen good wait out an address's failures
            self.failures.check(source)
        app = await self.identity.check_app(app_code, secret)
        if app is None:
            self.failures.take(source)
            raise JobError(
                ErrorCode.SERVICE_AUTH_FAIL,
                f"App authentication failed for {app_code!r}: wrong app code or secret",
                http_status=401,
            )
        self._apps[key] = (app, now + self.app_ttl)
        return app

    async def _user(self, username: str) -> User:
        now = time.monotonic()
        cached = self._users.get(username)
        if cached and cached[1] > now:
            return cached[0]
        user = await self.identity.get_user(username)
        self._users[username] = (user, now + self.user_ttl)
        return user
