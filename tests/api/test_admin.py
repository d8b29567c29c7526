"""api/admin.py: what a caller is told of itself."""

from __future__ import annotations

from tests.api.support import USER, Parts, build_app, client

from jobfleet.api.admin import create_app, whoami


async def test_whoami_lists_only_the_scopes_the_app_may_act_in(parts: Parts) -> None:
    """The test app is limited to business 2: its user's other grants are not its own."""
    identity = parts.identity
    for biz in (2, 3):
        await identity.create_business(biz, f"biz {biz}")
    await identity.create_biz_set(8000001, "within", [2])
    await identity.create_biz_set(8000002, "across", [2, 3])
    for scope_type, scope_id in (
        ("biz", "2"), ("biz", "3"), ("biz_set", "8000001"), ("biz_set", "8000002"),
    ):
        await identity.grant(USER, scope_type, scope_id)
    async with client(build_app(parts, {"whoami": whoami})) as http:
        answer = (await http.get("/t/whoami", headers=parts.headers())).json()
    assert answer["result"] is True, answer
    assert answer["data"]["scopes"] == [
        {"scope_type": "biz", "scope_id": "2"},
        {"scope_type": "biz_set", "scope_id": "8000001"},
    ]
    assert answer["data"]["app"]["allowed_biz"] == [2]


async def test_an_app_may_not_take_the_name_of_jobfleets_own_callers(parts: Parts) -> None:
    """The console, personal tokens and heal rules act under these codes without an app row;
    an app of that name would be taken for them, so none is made."""
    async with client(build_app(parts, {"create_app": create_app})) as http:
        for code in ("jobfleet-console", "jobfleet-token", "jobfleet-heal"):
            answer = (await http.post("/t/create_app", headers=parts.headers(),
                                      json={"app_code": code})).json()
            assert answer["code"] == 1241010, answer
            assert "reserved" in answer["message"], answer
            assert await parts.identity.find_app(code) is None
        made = (await http.post("/t/create_app", headers=parts.headers(),
                                json={"app_code": "jobfleet-ops"})).json()
        assert made["result"] is True, made
