"""/docs: Swagger UI from files shipped in a package, so it works offline.

The packaged Swagger UI (4.x) reads OpenAPI 3.0 only and refuses the 3.1 document
FastAPI writes ("does not specify a valid version field"), so the page loads the same
document written as 3.0: ``/openapi.json`` itself stays as generated.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
PAGE = "/docs"
DOCUMENT = "/docs/openapi.json"
OPENAPI_30 = "3.0.3"


def register(app: FastAPI) -> None:
    @app.get(PAGE, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=DOCUMENT,
            title="jobfleet API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    # written on the first request and kept: the route needs no credential, as
    # /openapi.json does not, and rewriting the whole document costs tens of ms of the
    # loop the agents share; the routes, and so the document, are fixed once serving
    written: list[bytes] = []

    @app.get(DOCUMENT, include_in_schema=False)
    async def document() -> Response:
        if not written:
            written.append(bytes(JSONResponse(as_openapi_30(app.openapi())).body))
        return Response(written[0], media_type="application/json")

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            return PlainTextResponse("not found", status_code=404)
        # imported here: the bundle loads the importlib_resources backport (~2 MiB
        # for the process's life), and most servers never serve these pages
        from swagger_ui_bundle import swagger_ui_path

        # the bundle is about 1 MiB: read off the loop the agents share
        data = await asyncio.to_thread((Path(swagger_ui_path) / name).read_bytes)
        return Response(
            data,
            media_type=ASSETS[name],
            headers={"Cache-Control": "public, max-age=86400"},
        )


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.1 document written as 3.0: ``null`` as a type becomes ``nullable``,
    ``const`` a one-value ``enum``, schema ``examples`` one ``example``, and numeric
    exclusive bounds the 3.0 boolean form."""
    out = copy.deepcopy(document)
    _schema_30(out)
    out["openapi"] = OPENAPI_30
    return out


def _schema_30(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _schema_30(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _schema_30(value)
    # each rule looks at the value's shape too: a property merely named "type" or
    # "const" in a ``properties`` map holds a schema (a dict), never these forms
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            node["nullable"] = True
            if rest:
                node[key] = rest
            else:
                del node[key]
    kinds = node.get("type")
    if isinstance(kinds, list):
        named = [k for k in kinds if k != "null"]
        if len(named) < len(kinds):
            node["nullable"] = True
        if len(named) == 1:
            node["type"] = named[0]
        elif named:
            del node["type"]
            node["anyOf"] = [{"type": k} for k in named]
        else:
            del node["type"]
    if "const" in node and not isinstance(node["const"], dict):
        node["enum"] = [node.pop("const")]
    examples = node.get("examples")
    if isinstance(examples, list):
        del node["examples"]
        if examples:
            node["example"] = examples[0]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[plain] = value
            node[bound] = True
