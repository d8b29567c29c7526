"""Every answer the console's pages read carries the pages' security headers, not only
the pages: the JSON API its scripts call (answers and errors), the live event stream, a
template's download, and a console address refused before its handler runs."""

from __future__ import annotations

import httpx
from tests.integration.harness import Running

from jobfleet.web.headers import HEADERS


async def console_session(running: Running) -> httpx.AsyncClient:
    """A client holding a console session, as a browser after logging in."""
    http = httpx.AsyncClient(base_url=running.url, timeout=60, trust_env=False)
    answer = await http.post(
        "/login", data={"username": "admin", "password": running.boot["admin_password"]}
    )
    assert answer.status_code == 303 and "jobfleet_session" in http.cookies, answer.headers
    return http


def assert_secured(answer: httpx.Response) -> None:
    for name, value in HEADERS.items():
        assert answer.headers.get(name) == value, (answer.request.url, name, answer.headers)


async def test_non_html_answers_carry_the_security_headers(running: Running) -> None:
    await running.start_agents(["127.0.12.1"])
    job = (await running.wire.run_script("echo hi", ["127.0.12.1"]))["job_instance_id"]
    await running.wire.wait(job)
    template = await running.wire.post(
        "/api/jobfleet/v1/templates?bk_scope_type=biz&bk_scope_id=2",
        {"name": "headers", "step_list": [{"name": "s", "type": 1, "script_info": {
            "script_type": 1, "script_content": "echo hi", "script_language": 1,
            "account": {"alias": "root"},
            "server": {"ip_list": [{"bk_cloud_id": 0, "ip": "127.0.12.1"}]}}}]})
    assert template["result"], template
    scope = "bk_scope_type=biz&bk_scope_id=2"
    http = await console_session(running)
    try:
        # the JSON API, as the page's script calls it: an answer and an error
        answer = await http.get(f"/api/jobfleet/v1/templates?{scope}")
        assert answer.json()["result"], answer.text
        assert_secured(answer)
        answer = await http.get(f"/api/jobfleet/v1/templates/999999?{scope}")
        assert answer.json()["result"] is False, answer.text
        assert_secured(answer)
        # a download
        answer = await http.get(f"/api/jobfleet/v1/templates/{template['data']['id']}/export"
                                f"?{scope}")
        assert answer.status_code == 200 and "kind:" in answer.text, answer.text
        assert_secured(answer)
        # the live event stream
        async with http.stream("GET", f"/api/jobfleet/v1/jobs/{job}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert_secured(stream)
        # a console address whose id is not a number: refused in the envelope, the input
        # not echoed (spelt outside hex so the request id cannot contain it by chance)
        answer = await http.get("/console/jobs/xyzzy/steps/1/ips")
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["result"] is False and "job_id" in body["message"], body
        assert "xyzzy" not in answer.text, answer.text
        assert_secured(answer)
        # no such address
        answer = await http.get("/console/nothing-here")
        assert answer.status_code == 404, answer.text
        assert_secured(answer)
    finally:
        await http.aclose()
