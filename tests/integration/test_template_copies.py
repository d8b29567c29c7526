"""A template exported as YAML and imported again under another name (``?name=``), and
the export answered as a file to save."""

from __future__ import annotations

from tests.integration.harness import Running
from tests.integration.test_plans import hosts, script

V1 = "/api/jobfleet/v1"
Q = {"bk_biz_id": 2}


async def test_import_under_another_name(running: Running) -> None:
    wire = running.wire
    made = await wire.post(f"{V1}/templates?bk_biz_id=2", {
        "name": "original", "step_list": [script("one", "echo one\n", hosts("127.0.0.9"))]})
    assert made["result"], made
    tpl = made["data"]
    assert (await wire.post(f"{V1}/templates/{tpl['id']}/plans?bk_biz_id=2",
                            {"name": "daily"}))["result"]
    export = await wire.http.get(f"{V1}/templates/{tpl['id']}/export", params=Q,
                                 headers=wire.headers())
    assert export.status_code == 200
    assert export.headers["content-disposition"] == (
        f'attachment; filename="template-{tpl["id"]}.yaml"')
    document = export.content

    async def send(**params: str) -> dict[str, object]:
        resp = await wire.http.post(f"{V1}/templates/import", content=document,
                                    params={**Q, **params}, headers=wire.headers())
        assert resp.status_code < 500, resp.text
        return dict(resp.json())

    # the document's own name is taken: refused, as before
    assert (await send())["code"] != 0
    copy = await send(name="  the copy  ")
    assert copy["result"], copy
    data = copy["data"]
    assert isinstance(data, dict)
    assert data["created"] is True and data["template"]["name"] == "the copy"
    assert [p["name"] for p in data["plans"]] == ["daily"]
    # a blank name is the document's name; a name too long is refused with the envelope
    assert (await send(name="   "))["code"] != 0
    too_long = await send(name="x" * 600)
    assert too_long["code"] != 0 and "name" in str(too_long["message"]), too_long
    listed = await wire.get(f"{V1}/templates", Q)
    assert sorted(t["name"] for t in listed["data"]["data"]) == ["original", "the copy"]
    entries = await running.server.audit.recent(50)
    assert any(e["action"] == "import_job_template" and e["detail"]["name"] == "the copy"
               for e in entries)
