"""The console's session cookie behind a proxy that ends TLS. ``cookie_secure = "always"``
marks it Secure although the server sees plain HTTP; by default ("auto") it is Secure
only when the request came over HTTPS, or a trusted proxy (uvicorn's
``FORWARDED_ALLOW_IPS``, loopback by default) says so in ``X-Forwarded-Proto``."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
from tests.integration.harness import Running, run_server

FORWARDED = {"X-Forwarded-Proto": "https"}


async def cookie_attributes(run: Running, headers: dict[str, str] | None = None) -> set[str]:
    """The attributes of the session cookie a login over plain HTTP sets."""
    assert run.url.startswith("http://")
    async with httpx.AsyncClient(base_url=run.url, trust_env=False, follow_redirects=False,
                                 timeout=60) as http:
        login = await http.post("/login", data={
            "username": "admin", "password": run.boot["admin_password"], "next": "/"},
            headers=headers or {})
        assert login.status_code == 303, login.text
        [cookie] = [c for c in login.headers.get_list("set-cookie")
                    if c.startswith("jobfleet_session=")]
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


async def test_the_session_cookie_is_secure_when_the_operator_says_so(
        tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path / "always", database_url,
                          server={"cookie_secure": "always"}) as run:
        attributes = await cookie_attributes(run)
    assert {"secure", "httponly", "samesite"} <= attributes, attributes


async def test_by_default_a_cookie_over_plain_http_is_not_secure(
        tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path / "auto", database_url) as run:
        assert "secure" not in await cookie_attributes(run)
        # a proxy on this host (trusted by default) that ended TLS
        assert "secure" in await cookie_attributes(run, FORWARDED)
        boot = run.boot
    # the same database, with its keys: the admin the first server made
    (tmp_path / "never" / "server").mkdir(parents=True)
    shutil.copy(tmp_path / "auto" / "server" / "secret.key", tmp_path / "never" / "server")
    shutil.copytree(tmp_path / "auto" / "server" / "tls", tmp_path / "never" / "server" / "tls")
    async with run_server(tmp_path / "never", database_url, boot=boot,
                          server={"cookie_secure": "never"}) as run:
        assert "secure" not in await cookie_attributes(run, FORWARDED)
