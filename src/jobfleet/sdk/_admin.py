"""jobfleet's own API (``/api/jobfleet/v1``) for both clients: how the clients call it,
and the admin calls (apps, users, grants, businesses, hosts, agents, fetched files).

Like ``_api``, each method only names its request; the sync client answers with data,
the async one with awaitables of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from jobfleet.sdk import _file_flow
from jobfleet.sdk._models import Target
from jobfleet.sdk._transport import Method
from jobfleet.sdk._transport import path_segment as _seg

D = TypeVar("D")
L = TypeVar("L")
S = TypeVar("S")


class AdminCalls(Generic[D, L, S]):
    """How the sync and async clients call jobfleet's own API (``/api/jobfleet/v1``);
    the groups of calls (admin, templates, notifications, topology) build on it.

    ``D``, ``L`` and ``S`` are what a call answers for an object, a list and a text:
    the data itself in the sync client, awaitables of it in the async one
    (``ClientBase`` implements the four calls for both).
    """

    biz: int | str | None = None

    def _admin_dict(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> D:
        raise NotImplementedError

    def _admin_list(self, path: str, params: dict[str, Any] | None = None) -> L:
        raise NotImplementedError

    def _admin_text(self, path: str, params: dict[str, Any]) -> S:
        """A YAML document (template export)."""
        raise NotImplementedError

    def _admin_send_text(self, path: str, text: str, params: dict[str, Any]) -> D:
        """Send a YAML document (template import)."""
        raise NotImplementedError

    def _biz_or_default(self, biz: int | str | None) -> int | str | None:
        return self.biz if biz is None else biz

    def _named_biz(self, biz: int | str | None) -> int | str:
        """The business a call names, or the client's; one there must be."""
        chosen = self._biz_or_default(biz)
        if chosen is None:
            raise ValueError("name a business: biz=… here or on the client")
        return chosen


class AdminApi(AdminCalls[D, L, S]):
    """jobfleet's own API (``/api/jobfleet/v1``, docs/rest-api.md); most calls need an admin."""

    def whoami(self) -> D:
        """``{app_code, username, is_admin, scopes}`` of the caller."""
        return self._admin_dict("GET", "/whoami")

    def create_app(
        self,
        app_code: str,
        *,
        description: str | None = None,
        users: Sequence[str] | None = None,
        biz: Sequence[int] | None = None,
        admin: bool = False,
    ) -> D:
        """Returns ``{app_code, app_secret, …}``; the secret is never shown again.

        ``users``/``biz``: the only users the app may name and businesses it may touch
        (None: any); ``admin``: the app may reach the administration routes."""
        body: dict[str, Any] = {"app_code": app_code, "description": description}
        if users is not None:
            body["allowed_users"] = list(users)
        if biz is not None:
            body["allowed_biz"] = [int(b) for b in biz]
        if admin:
            body["is_admin"] = True
        return self._admin_dict("POST", "/apps", body)

    def list_apps(self) -> L:
        return self._admin_list("/apps")

    def delete_app(self, app_code: str) -> D:
        return self._admin_dict("DELETE", f"/apps/{_seg(app_code)}")

    def create_user(self, username: str, *, is_admin: bool | None = None) -> D:
        """Create a user, or change an existing user's ``is_admin``; without ``is_admin``
        a user that exists is a conflict (1249409), and a new one is not an administrator."""
        body: dict[str, Any] = {"username": username}
        if is_admin is not None:
            body["is_admin"] = is_admin
        return self._admin_dict("POST", "/users", body)

    def list_users(self) -> L:
        return self._admin_list("/users")

    def grant_scope(self, username: str, scope_id: int | str, scope_type: str = "biz") -> D:
        """Let ``username`` act in a business (or business set)."""
        return self._admin_dict(
            "POST",
            f"/users/{_seg(username)}/grants",
            {"scope_type": scope_type, "scope_id": str(scope_id)},
        )

    def set_password(self, username: str, password: str) -> D:
        """Set ``username``'s console password (administrators)."""
        return self._admin_dict("POST", f"/users/{_seg(username)}/password", {"password": password})

    def revoke_scope(self, username: str, scope_id: int | str, scope_type: str = "biz") -> D:
        return self._admin_dict(
            "DELETE",
            f"/users/{_seg(username)}/grants/{_seg(scope_type)}/{_seg(str(scope_id))}",
        )

    def create_business(self, bk_biz_id: int, name: str) -> D:
        return self._admin_dict("POST", "/businesses", {"bk_biz_id": bk_biz_id, "name": name})

    def list_businesses(self) -> L:
        return self._admin_list("/businesses")

    def create_biz_set(self, bk_biz_set_id: int, name: str, bk_biz_ids: Sequence[int]) -> D:
        """A business set (id 8000000-9999999) of existing businesses."""
        return self._admin_dict(
            "POST",
            "/business-sets",
            {"bk_biz_set_id": bk_biz_set_id, "name": name, "bk_biz_ids": list(bk_biz_ids)},
        )

    def list_biz_sets(self) -> L:
        return self._admin_list("/business-sets")

    def list_hosts(self, *, bk_biz_id: int | None = None, alive: bool | None = None) -> L:
        return self._admin_list("/hosts", {"bk_biz_id": bk_biz_id, "alive": alive})

    def add_host(
        self,
        ip: str,
        *,
        bk_biz_id: int,
        bk_cloud_id: int = 0,
        hostname: str | None = None,
    ) -> D:
        """Register a host ahead of its agent (the agent may also enroll it itself)."""
        return self._admin_dict(
            "POST",
            "/hosts",
            {"bk_biz_id": bk_biz_id, "ip": ip, "bk_cloud_id": bk_cloud_id, "hostname": hostname},
        )

    def create_enroll_token(
        self,
        *,
        bk_biz_id: int | None = None,
        uses: int | None = None,
        ttl_seconds: int | None = None,
        note: str | None = None,
    ) -> D:
        """Returns ``{token}`` for agents to enroll with."""
        return self._admin_dict(
            "POST",
            "/enroll-tokens",
            {"bk_biz_id": bk_biz_id, "uses": uses, "ttl_seconds": ttl_seconds, "note": note},
        )

    def revoke_agent(self, agent_id: str) -> D:
        """Revoke an agent's credential: it can no longer connect."""
        return self._admin_dict("DELETE", f"/agents/{_seg(agent_id)}")

    # --- files ------------------------------------------------------------------

    def fetch_files(
        self,
        paths: Sequence[str],
        *,
        hosts: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        target: Target | None = None,
        bk_cloud_id: int = 0,
        account: str = "root",
        timeout: int | None = None,
        biz: int | str | None = None,
    ) -> D:
        """Start bringing the files at absolute ``paths`` from each host to the server.

        Returns ``{job_instance_id, job_instance_name, step_instance_id}``; wait for the
        job, then ``fetched_files`` lists what arrived and ``download_file`` saves it.
        """
        body = _file_flow.fetch_request(
            paths,
            hosts=hosts,
            host_ids=host_ids,
            bk_cloud_id=bk_cloud_id,
            account=account,
            timeout=timeout,
            biz=self._biz_or_default(biz),
            target=target,
        )
        return self._admin_dict("POST", "/fetch", body)

    def fetched_files(self, job_instance_id: int, biz: int | str | None = None) -> L:
        """What a fetch brought back, one entry per host and file:
        ``{bk_host_id, ip, bk_cloud_id, path, file_id, size, sha256, status}``
        (``status`` 4 means the file arrived)."""
        return self._admin_list(
            f"/fetch/{int(job_instance_id)}", {"bk_biz_id": self._biz_or_default(biz)}
        )

    # personal API tokens of the calling user ------------------------------------------

    def create_personal_token(self, *, ttl_seconds: int | None = None, note: str = "") -> D:
        """``{id, token, expires_at, note}``: a bearer token (``Authorization: Bearer …``)
        acting as the calling user until ``ttl_seconds`` from now (server default: 30
        days). The secret ``token`` is shown this once; the server keeps only a hash."""
        body: dict[str, Any] = {"note": note}
        if ttl_seconds is not None:
            body["expires_in"] = int(ttl_seconds)
        return self._admin_dict("POST", "/tokens", body)

    def list_personal_tokens(self) -> L:
        """The calling user's tokens: ``{id, note, expires_at, create_time}`` (no secrets)."""
        return self._admin_list("/tokens")

    def revoke_personal_token(self, token_id: int) -> D:
        """Delete one of the calling user's tokens; ``{id}``."""
        return self._admin_dict("DELETE", f"/tokens/{int(token_id)}")

    # another user's personal tokens (administrators) --------------------------------

    def list_user_tokens(self, username: str) -> L:
        """``username``'s tokens: ``{id, note, expires_at, create_time}`` (no secrets)."""
        return self._admin_list(f"/users/{_seg(username)}/tokens")

    def revoke_user_token(self, username: str, token_id: int) -> D:
        """Delete one of ``username``'s tokens; ``{username, id}``."""
        return self._admin_dict("DELETE", f"/users/{_seg(username)}/tokens/{int(token_id)}")

    def revoke_user_tokens(self, username: str) -> D:
        """Delete every token of ``username``; ``{username, revoked}`` (how many)."""
        return self._admin_dict("DELETE", f"/users/{_seg(username)}/tokens")
