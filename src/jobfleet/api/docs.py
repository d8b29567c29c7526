"""/docs: Swagger UI from files shipped in a package, so it works offline."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from swagger_ui_bundle import swagger_ui_path

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
PAGE = "/docs"


def register(app: FastAPI) -> None:
    root = Path(swagger_ui_path)

    @app.get(PAGE, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="jobfleet API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            return PlainTextResponse("not found", status_code=404)
        return Response(
            (root / name).read_bytes(),
            media_type=ASSETS[name],
            headers={"Cache-Control": "public, max-age=86400"},
        )
