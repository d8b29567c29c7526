"""A personal token may not mint a token that outlives it: a short-lived token
cannot extend itself; a console session or app credentials still may create long ones."""

from __future__ import annotations

import httpx
from tests.integration.harness import Running


async def test_a_token_cannot_outlive_the_token_that_made_it(running: Running) -> None:
    wire = running.wire
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        made = (await http.post("/api/jobfleet/v1/tokens", json={"expires_in": 600},
                                headers=wire.headers())).json()
        assert made["result"], made
        bearer = {"Authorization": f"Bearer {made['data']['token']}"}
        longer = (await http.post("/api/jobfleet/v1/tokens",
                                  json={"expires_in": 365 * 24 * 3600}, headers=bearer)).json()
        assert not longer["result"] and longer["code"] != 0, longer
        assert "outlive" in longer["message"] and "expires_in" in longer["message"]
        assert longer.get("data") is None
        # a shorter one is fine, and it expires no later than the token that made it
        shorter = (await http.post("/api/jobfleet/v1/tokens", json={"expires_in": 120},
                                   headers=bearer)).json()
        assert shorter["result"], shorter
        assert shorter["data"]["expires_at"] <= made["data"]["expires_at"]
        # the default (30 days) is refused too rather than silently shortened
        default = (await http.post("/api/jobfleet/v1/tokens", json={}, headers=bearer)).json()
        assert not default["result"] and "outlive" in default["message"], default
        # app credentials are not bound by any token
        year = (await http.post("/api/jobfleet/v1/tokens", json={"expires_in": 365 * 24 * 3600},
                                headers=wire.headers())).json()
        assert year["result"], year
