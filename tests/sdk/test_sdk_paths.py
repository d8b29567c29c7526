"""Names and ids a caller gives land in one URL path segment, and only there."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from tests.sdk.hostile import hostile_server, whole

from jobfleet.sdk import JobApiError, JobClient, JobInvalidError

OK = b'{"result": true, "code": 0, "data": {}}'

CALLS: list[tuple[str, Callable[[JobClient, Any], object]]] = [
    ("revoke_user_token", lambda c, name: c.revoke_user_token(name, 4)),
    ("revoke_user_tokens", lambda c, name: c.revoke_user_tokens(name)),
    ("list_user_tokens", lambda c, name: c.list_user_tokens(name)),
    ("revoke_agent", lambda c, name: c.revoke_agent(name)),
    ("get_dynamic_group", lambda c, name: c.get_dynamic_group(name)),
    ("delete_dynamic_group", lambda c, name: c.delete_dynamic_group(name)),
    ("get_app_quota", lambda c, name: c.get_app_quota(name)),
    ("delete_heal_rule", lambda c, name: c.delete_heal_rule(name)),
    ("delete_notify_config", lambda c, name: c.delete_notify_config(name)),
    ("download_file", lambda c, name: c.download_file(name, "/nonexistent/x")),
]


@pytest.mark.parametrize("name", ["..", ".", ""])
@pytest.mark.parametrize(("what", "call"), CALLS)
def test_a_dot_name_is_refused_before_anything_is_sent(
    what: str, call: Callable[[JobClient, Any], object], name: str
) -> None:
    # "/users/../tokens/4" is what httpx sends as "/tokens/4": the caller's own token
    with (
        hostile_server(whole("200 OK", OK)) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
        pytest.raises(JobInvalidError, match="cannot name anything in a URL path"),
    ):
        call(client, name)
    assert server.requests == []


@pytest.mark.parametrize(("what", "call"), CALLS[:-1])
def test_a_name_with_slashes_stays_one_segment(
    what: str, call: Callable[[JobClient, Any], object]
) -> None:
    with (
        hostile_server(whole("200 OK", OK)) as server,
        JobClient(server.url, "a", "s", "u", biz=2) as client,
        contextlib.suppress(JobApiError),  # an object where a list is due: no matter here
    ):
        call(client, "../../x")
    assert "..%2F..%2Fx" in server.requests[0]
