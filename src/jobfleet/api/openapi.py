"""/openapi.json with the request models, the envelope and the credentials header.

Handlers read their parameters themselves, as leniently as bk-job does, so FastAPI sees
no body or query model on the routes; this module adds them to the generated document
from ``api.models`` without changing how any request is parsed.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from jobfleet.api.models import BKJOB, JOBFLEET, Envelope
from jobfleet.api.routing import OWN_PREFIX
from jobfleet.api.template_files import YAML_TYPE

REF = "#/components/schemas/{model}"
# bodies that are a file, not JSON: their parameters come in the query string
RAW_BODIES = {
    ("POST", "/files"): "application/octet-stream",
    ("PUT", "/files/upload/{blob_id}"): "application/octet-stream",
    ("POST", "/files/upload/{blob_id}"): "application/octet-stream",
    ("PUT", "/agents/blobs/{blob_id}"): "application/octet-stream",
    ("PUT", "/agents/blobs/bundle"): "application/octet-stream",
    ("POST", "/templates/import"): YAML_TYPE,
}
# answers that are a file when they succeed (errors are still the envelope)
RAW_ANSWERS = {
    ("GET", "/files/{file_id}"): "application/octet-stream",
    ("GET", "/agents/blobs/{blob_id}"): "application/octet-stream",
    ("POST", "/agents/blobs/bundle"): "application/octet-stream",
    ("GET", "/fetch/{job_instance_id}/{host_dir}/{path}"): "application/octet-stream",
    ("GET", "/templates/{id}/export"): YAML_TYPE,
}
ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
TEXT = {"type": "string", "minLength": 1}
# path parameters that are numbers; the others are text (dynamic group ids are text too)
NUMERIC_PATH = {"id", "bk_biz_id", "job_instance_id"}
SCALARS = {"string", "integer", "number", "boolean"}


class DocumentedAPI(FastAPI):
    """FastAPI whose /openapi.json carries jobfleet's request and response models."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document(super().openapi())
        assert self.openapi_schema is not None
        return self.openapi_schema


def model_of(method: str, path: str) -> type[BaseModel] | None:
    if path.startswith(OWN_PREFIX + "/"):
        return JOBFLEET.get((method, path[len(OWN_PREFIX) :]))
    return BKJOB.get(path.rstrip("/").rsplit("/", 1)[-1])


def document(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    models: dict[str, Any] = components.setdefault("schemas", {})
    components["securitySchemes"] = {
        "bkapi": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Bkapi-Authorization",
            "description": 'JSON {"bk_app_code", "bk_app_secret", "bk_username"}',
        }
    }
    schema["security"] = [{"bkapi": []}]
    _add_model(models, Envelope)
    for path, operations in schema["paths"].items():
        for method_lower, operation in operations.items():
            method = method_lower.upper()
            model = model_of(method, path)
            if model is None:
                continue
            body = _add_model(models, model)
            key = (method, path[len(OWN_PREFIX) :])
            in_path = re.findall(r"{(\w+)(?::\w+)?}", path)
            parameters = [_path_parameter(name, path) for name in in_path]
            if key in RAW_BODIES:
                parameters += _query_parameters(body, models, in_path)
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        RAW_BODIES[key]: {"schema": {"type": "string", "format": "binary"}}
                    },
                }
            elif method in ("GET", "DELETE"):
                parameters += _query_parameters(body, models, in_path)
            else:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}
                    },
                }
            if parameters:
                operation["parameters"] = parameters
            operation["responses"] = _responses(RAW_ANSWERS.get(key))


def _add_model(models: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    body = model.model_json_schema(ref_template=REF)
    models.update(body.pop("$defs", {}))
    models[model.__name__] = body
    return body


def _path_parameter(name: str, path: str) -> dict[str, Any]:
    numeric = name in NUMERIC_PATH and not path.startswith(OWN_PREFIX + "/dynamic-groups")
    return {"name": name, "in": "path", "required": True, "schema": ID if numeric else TEXT}


def _query_parameters(
    body: dict[str, Any], models: dict[str, Any], skip: list[str]
) -> list[dict[str, Any]]:
    """The model's fields that a query string can carry: the scalar ones."""
    required = set(body.get("required", []))
    out = []
    for name, field in body.get("properties", {}).items():
        if name in skip or not _is_scalar(field, models):
            continue
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in field.items() if k not in ("title", "description")},
        }
        if field.get("description"):
            parameter["description"] = field["description"]
        out.append(parameter)
    return out


def _is_scalar(field: dict[str, Any], models: dict[str, Any]) -> bool:
    if "$ref" in field:
        return False
    options = field.get("anyOf", [field])
    types = {o.get("type") for o in options if o.get("type") != "null"}
    return bool(types) and types <= SCALARS and all("enum" in o or "type" in o for o in options)


def _responses(raw: str | None) -> dict[str, Any]:
    envelope = {"application/json": {"schema": {"$ref": REF.format(model="Envelope")}}}
    ok = {"description": "the envelope with the answer in `data`", "content": envelope}
    if raw is not None:
        ok = {
            "description": "the file",
            "content": {raw: {"schema": {"type": "string", "format": "binary"}}},
        }
    return {"200": ok, "default": {"description": "an error, in the envelope", "content": envelope}}
