"""api/admin.py: what a caller is told of itself."""

from __future__ import annotations

from tests.api.support import USER, Parts, build_app, client

from jobfleet.api.admin import add_host, create_app, create_token, grant, revoke, whoami


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


async def test_an_app_code_is_one_a_blueking_client_can_send(parts: Parts) -> None:
    """App codes travel in X-Bkapi-Authorization and audit entries; BlueKing's gateway
    issues lowercase letters, digits, '_' and '-' only. An app stored before the rule
    keeps working."""
    await parts.identity.create_app("Old App", secret="old-secret")
    async with client(build_app(parts, {"create_app": create_app})) as http:
        for code in ("bad name!", "Ops", "-ops", "_ops", "ops\n", "a" * 33, "ops;x",
                     "\u00e9t\u00e9"):
            answer = (await http.post("/t/create_app", headers=parts.headers(),
                                      json={"app_code": code})).json()
            assert (answer["result"], answer["code"]) == (False, 1241010), (code, answer)
            assert "lowercase letters, digits, '_' and '-'" in answer["message"], answer
            assert await parts.identity.find_app(code) is None
        for code in ("ops", "ci-bot_2", "9lives", "a" * 32):
            made = (await http.post("/t/create_app", headers=parts.headers(),
                                    json={"app_code": code})).json()
            assert made["result"] is True, (code, made)
    assert await parts.identity.check_app("Old App", "old-secret") is not None


async def test_business_ids_that_do_not_exist_are_refused_by_name(parts: Parts) -> None:
    """Businesses are made only by an administrator, never synced in later: an app limited
    to, a grant of, a host or an enrollment token in one that does not exist is a typo."""
    await parts.identity.create_business(2, "two")
    app = build_app(parts, {"create_app": create_app, "grant": grant, "add_host": add_host,
                            "create_token": create_token})
    async with client(app) as http:
        async def post(route: str, body: dict[str, object]) -> dict[str, object]:
            answer: dict[str, object] = (
                await http.post(f"/t/{route}", headers=parts.headers(), json=body)).json()
            return answer

        one = await post("create_app", {"app_code": "ops", "allowed_biz": [999]})
        assert (one["result"], one["code"]) == (False, 1243049), one
        assert one["message"] == "allowed_biz: business 999 does not exist", one
        some = await post("create_app", {"app_code": "ops", "allowed_biz": "2,1000,999"})
        assert some["code"] == 1243049, some
        assert some["message"] == "allowed_biz: businesses 999, 1000 do not exist", some
        assert await parts.identity.find_app("ops") is None
        made = await post("create_app", {"app_code": "ops", "allowed_biz": [2]})
        assert made["result"] is True, made

        for scope_type, scope_id, code in (("biz", "999", 1243049),
                                           ("biz_set", "8000001", 1243051)):
            refused = await post("grant", {"username": USER, "scope_type": scope_type,
                                           "scope_id": scope_id})
            assert refused["code"] == code and scope_id in str(refused["message"]), refused
        bad = await post("grant", {"username": USER, "scope_type": "biz", "scope_id": "x"})
        assert bad["code"] == 1241010, bad
        granted = await post("grant", {"username": USER, "scope_type": "biz", "scope_id": "02"})
        assert granted["data"] == {"username": USER, "scope_type": "biz", "scope_id": "2"}
        scopes = next(u for u in await parts.identity.list_users()
                      if u["username"] == USER)["scopes"]
        assert scopes == [{"scope_type": "biz", "scope_id": "2"}]

        host = await post("add_host", {"bk_biz_id": 999, "ip": "127.0.0.9"})
        assert host["code"] == 1243049 and "999" in str(host["message"]), host
        token = await post("create_token", {"bk_biz_id": 999})
        assert token["code"] == 1243049 and "999" in str(token["message"]), token


async def test_a_grant_is_revoked_in_the_words_it_was_made_in(parts: Parts) -> None:
    """A grant keeps a business id in its normal form; revoking it as it was given
    takes it back, also a row kept as given before ids were put in that form."""
    await parts.identity.create_business(2, "two")
    app = build_app(parts, {"grant": grant, "revoke": revoke})

    async def scopes() -> list[dict[str, str]]:
        users = await parts.identity.list_users()
        found: list[dict[str, str]] = next(
            (u["scopes"] for u in users if u["username"] == USER), [])
        return found

    async with client(app) as http:
        async def post(route: str, body: dict[str, object]) -> dict[str, object]:
            answer: dict[str, object] = (
                await http.post(f"/t/{route}", headers=parts.headers(), json=body)).json()
            return answer

        for given in ("02", "+2", "2"):
            scope = {"username": USER, "scope_type": "biz", "scope_id": given}
            assert (await post("grant", scope))["result"] is True
            assert await scopes() == [{"scope_type": "biz", "scope_id": "2"}]
            revoked = await post("revoke", scope)
            assert revoked["result"] is True, revoked
            assert await scopes() == [], given

        await parts.identity.grant(USER, "biz", "02")
        await post("revoke", {"username": USER, "scope_type": "biz", "scope_id": "02"})
        assert await scopes() == []
