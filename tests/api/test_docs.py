"""/docs: the packaged Swagger UI reads OpenAPI 3.0, so the page loads the document
written as 3.0, while /openapi.json stays as FastAPI writes it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from swagger_ui_bundle import swagger_ui_path
from tests.api.test_app_routes import get_reading_off_the_loop, server

from jobfleet.api import docs
from jobfleet.api.docs import as_openapi_30


def walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [d for item in node for d in walk(item)]
    if isinstance(node, dict):
        return [node, *(d for value in node.values() for d in walk(value))]
    return []


async def test_the_docs_page_loads_a_document_its_swagger_ui_reads(tmp_path: Path) -> None:
    node = server(tmp_path / "a")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app),
                                 base_url="http://127.0.0.1") as client:
        page = (await client.get("/docs")).text
        url = re.search(r"url: '([^']+)'", page)
        assert url is not None, page
        answer = await client.get(url.group(1))
        assert answer.status_code == 200, answer.text[:200]
        loaded = answer.json()
        original = (await client.get("/openapi.json")).json()
    # Swagger UI before 5 refuses anything but 2.0 and 3.0.n
    major = int(Path(swagger_ui_path).name.rsplit("-", 1)[-1].split(".")[0])
    if major < 5:
        assert re.fullmatch(r"3\.0\.\d+", loaded["openapi"]), loaded["openapi"]
        for schema in walk(loaded["components"]["schemas"]):
            assert schema.get("type") != "null" and not isinstance(schema.get("type"), list)
            assert {"type": "null"} not in schema.get("anyOf", []), schema
            assert not isinstance(schema.get("examples"), list), schema
    assert original["openapi"].startswith("3.1"), original["openapi"]
    assert loaded["paths"].keys() == original["paths"].keys()


def test_31_forms_become_their_30_forms() -> None:
    document = {
        "openapi": "3.1.0",
        "components": {"schemas": {"M": {"type": "object", "properties": {
            "a": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "b": {"type": ["string", "null"]},
            "c": {"const": "biz"},
            "d": {"type": "integer", "exclusiveMinimum": 0, "examples": [3, 4]},
            # properties whose names are keywords hold schemas: left as they are
            "type": {"type": "string"},
            "const": {"type": "string"},
        }}}},
    }
    before = json.dumps(document)
    props = as_openapi_30(document)["components"]["schemas"]["M"]["properties"]
    assert json.dumps(document) == before
    assert props["a"] == {"anyOf": [{"type": "integer"}], "nullable": True, "default": None}
    assert props["b"] == {"type": "string", "nullable": True}
    assert props["c"] == {"enum": ["biz"]}
    assert props["d"] == {"type": "integer", "minimum": 0, "exclusiveMinimum": True,
                          "example": 3}
    assert props["type"] == {"type": "string"} and props["const"] == {"type": "string"}


async def test_the_30_document_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's document is public, as /openapi.json is, and rewriting it takes tens of
    ms on the loop the agents share: done once, not for every request."""
    written: list[int] = []

    def counted(document: dict[str, Any]) -> dict[str, Any]:
        written.append(1)
        return as_openapi_30(document)

    monkeypatch.setattr(docs, "as_openapi_30", counted)
    node = server(tmp_path / "a")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app),
                                 base_url="http://127.0.0.1") as client:
        answers = [await client.get(docs.DOCUMENT) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json()["openapi"] == docs.OPENAPI_30
    assert answers[0].content == answers[2].content
    assert answers[0].headers["content-type"] == "application/json"
    assert len(written) == 1


async def test_an_asset_is_read_off_the_event_loop(tmp_path: Path) -> None:
    """The bundle is about 1 MiB: read on the loop, every request for it would stall the
    agents' connections for as long as the read takes."""
    answer = await get_reading_off_the_loop(
        tmp_path, "/docs/assets/swagger-ui-bundle.js", "swagger-ui-bundle.js")
    assert answer.status_code == 200
    assert answer.content == (Path(swagger_ui_path) / "swagger-ui-bundle.js").read_bytes()
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["cache-control"] == "public, max-age=86400"
