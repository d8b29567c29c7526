"""The console's script, template and cron pages given odd addresses: every answer is a
page (or "not found"), never a server error, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest
from tests.integration.harness import Running
from tests.integration.test_console_catalog import BIZ, OLD, V1, b64, ok
from tests.integration.test_plans import hosts, script

ODD = ["0", "-1", "abc", "9" * 40, "%00", "a%00b", "%E2%80%AE", "..%2F..", "x" * 2000]
QUERIES = ["?offset=-5", "?offset=99999999999999999999", "?name=%00", "?name=" + "n" * 5000,
           "?version=%00&a=x&b=-1&mode=%3Cscript%3E", "?a=1&b=2&mode=unified", "?biz=999"]


@pytest.mark.nodelay
async def test_odd_addresses_answer_pages(running: Running) -> None:
    wire = running.wire
    made = ok(await wire.v3("create_script", {
        **BIZ, "name": "s", "script_language": 1, "content": b64(OLD), "version": "1"}))
    public = ok(await wire.v3("create_public_script", {
        "name": "p", "script_language": 1, "content": b64(OLD), "version": "1"}))
    tpl = ok(await wire.post(f"{V1}/templates?bk_biz_id=2", {
        "name": "t", "step_list": [script("s", "echo s\n", hosts("127.0.0.9"))]}))
    plan = ok(await wire.post(f"{V1}/templates/{tpl['id']}/plans?bk_biz_id=2", {"name": "p"}))
    cron = ok(await wire.v3("save_cron", {
        **BIZ, "name": "c", "job_plan_id": plan["id"], "expression": "0 3 * * *"}))
    real = {"/scripts": made["script_id"], "/public-scripts": public["script_id"],
            "/templates": tpl["id"], "/crons": cron["id"]}
    async with httpx.AsyncClient(base_url=running.url, trust_env=False,
                                 follow_redirects=False, timeout=60) as http:
        login = await http.post("/login", data={
            "username": "admin", "password": running.boot["admin_password"], "next": "/"})
        assert login.status_code == 303 and "jobfleet_session" in http.cookies
        for base in ("/scripts", "/public-scripts", "/templates", "/crons"):
            for query in ["", *QUERIES]:
                resp = await http.get(base + query)
                assert resp.status_code == 200, (base, query, resp.status_code)
            for odd in [*ODD, real[base]]:
                for query in ["", *QUERIES]:
                    resp = await http.get(f"{base}/{odd}{query}")
                    assert resp.status_code in (200, 404), (base, odd, query, resp.text[:200])
                    assert "Traceback" not in resp.text
        # not logged in: to the login page
        async with httpx.AsyncClient(base_url=running.url, trust_env=False,
                                     timeout=60) as anonymous:
            for path in ("/scripts", "/public-scripts/x", "/templates/1", "/crons/1"):
                resp = await anonymous.get(path, follow_redirects=False)
                assert resp.status_code == 303 and "/login" in resp.headers["location"]


async def test_the_pages_in_both_languages(running: Running) -> None:
    made = ok(await running.wire.v3("create_script", {
        **BIZ, "name": "s", "script_language": 1, "content": b64(OLD), "version": "1"}))
    words = {
        "/scripts": ("Scripts", "脚本管理"),
        "/public-scripts": ("Public scripts", "公共脚本"),
        f"/scripts/{made['script_id']}": ("Compare versions", "版本对比"),
        "/templates": ("Import a template (YAML)", "导入作业模板(YAML)"),
        "/crons": ("Next run", "下次执行"),
    }
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        await http.post("/login", data={
            "username": "admin", "password": running.boot["admin_password"], "next": "/"})
        for path, (english, chinese) in words.items():
            assert english in (await http.get(path, headers={"accept-language": "en"})).text
            page = (await http.get(path, headers={"accept-language": "zh-CN,zh"})).text
            assert chinese in page and english not in page, path


PAGES = ["/", "/execute", "/files", "/jobs", "/plans", "/hosts", "/accounts",
         "/dangerous-rules", "/notifications", "/audit"]
# numbers past every column's range, digits int() refuses, NUL, negative, markup
PAGE_QUERIES = [
    "?offset=99999999999999999999", "?offset=%C2%B2", "?status=99999999999",
    "?status=%C2%B2&launch_mode=%C2%B3", "?days=99999999999999&job_cron_id=9999999999999999999",
    "?days=0", "?name=a%00b&operator=%00", "?biz=%C2%B2", "?state=%00&label=%00&q=%00",
    "?node=%C2%B2&group=99999999999999999999&offset=-1", "?status=-1&days=-3",
]


async def test_every_console_page_answers_odd_queries(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, trust_env=False,
                                 follow_redirects=False, timeout=60) as http:
        await http.post("/login", data={
            "username": "admin", "password": running.boot["admin_password"], "next": "/"})
        for path in PAGES:
            for query in ["", *PAGE_QUERIES]:
                resp = await http.get(path + query)
                assert resp.status_code == 200, (path, query, resp.status_code, resp.text[:300])
                assert "Traceback" not in resp.text
        for odd in ODD:
            for path in ("/api_execute/", "/api_plan/"):
                resp = await http.get(path + odd)
                assert resp.status_code in (200, 404), (path, odd, resp.status_code)
        big = "9" * 30
        for path in (f"/console/jobs/{big}/steps/1/output-groups",
                     f"/console/jobs/1/steps/{big}/ips", f"/console/jobs/1/steps/1/hosts/{big}/log",
                     f"/console/jobs/{big}/steps/1/output-groups/0/ips"):
            resp = await http.get(path)
            assert resp.status_code in (404, 422), (path, resp.status_code, resp.text[:200])
        # a business cookie past every id
        http.cookies.set("jobfleet_biz", "9" * 40)
        assert (await http.get("/jobs")).status_code == 200


async def test_a_business_past_any_number_is_no_business(running: Running) -> None:
    """``?biz=`` and the business cookie are the user's to edit: digits too many to read
    as a number pick the first business, as any business the user lacks does."""
    huge = "9" * 5000
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60,
                                 follow_redirects=False) as http:
        login = await http.post("/login", data={
            "username": "admin", "password": running.boot["admin_password"], "next": "/"})
        assert login.status_code == 303 and "jobfleet_session" in http.cookies
        paths = ("/", "/jobs", "/execute", "/plans", "/scripts", "/crons")
        for path in paths:
            resp = await http.get(f"{path}?biz={huge}")
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])
        http.cookies.set("jobfleet_biz", huge)
        for path in paths:
            resp = await http.get(path)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])


async def test_a_csrf_token_of_any_bytes_is_refused_with_the_envelope(running: Running) -> None:
    """The CSRF header is the client's: one holding bytes past ASCII is a wrong token
    (403 in the envelope), not a server error."""
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60,
                                 follow_redirects=False) as http:
        login = await http.post("/login", data={
            "username": "admin", "password": running.boot["admin_password"], "next": "/"})
        assert login.status_code == 303 and "jobfleet_session" in http.cookies
        for token in ("wrong", "caf\xe9", "\xff" * 40):
            resp = await http.post(
                "/api/jobfleet/v1/users", json={"username": "csrf-probe"},
                headers={"X-CSRF-Token": token.encode("latin-1")})
            assert resp.status_code == 403, (token, resp.status_code, resp.text[:200])
            assert "CSRF" in resp.json()["message"]
