"""A bounded property-based run of every operation in /openapi.json against a live server.

Schemathesis draws requests from the documented models (valid ones, and invalid ones that
break them) and sends them with valid credentials; every answer must be the bk-job
envelope with a fitting HTTP status, and never a server error.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from tests.integration.harness import Running

# thousands of requests one after another
pytestmark = pytest.mark.nodelay

# the requests a server may answer with an error in the envelope
ERROR_STATUSES = {200, 400, 401, 403, 404, 405, 409, 413, 429}
INTERNAL_ERROR = 1240002
BUSINESS = 2  # the one the server makes on first start
LOOPBACK_URL = "http://127.0.0.1:9/jobfleet-fuzz"
# fields whose value the server may connect to: always a loopback address that refuses;
# and host addresses, which are never anything but loopback in a test either
URL_FIELDS = ("callback_url", "target", "url", "webhook_url")
ADDRESS_FIELDS = ("ip", "search_ip")
LOOPBACK_IP = "127.0.0.2"
# examples per operation: valid requests, requests whose integers are past the documented
# bounds (ids past 64 bits, negative paging, …), and requests that break the schema
PASSES = (("documented", GenerationMode.POSITIVE, 2), ("out_of_range", GenerationMode.POSITIVE, 2),
          ("documented", GenerationMode.NEGATIVE, 1))


def on_loopback(value: Any) -> Any:
    """``value`` with every URL and address field at any depth pointing at loopback."""
    if isinstance(value, list):
        return [on_loopback(item) for item in value]
    if not isinstance(value, dict):
        return value
    pinned = {}
    for key, item in value.items():
        if key in URL_FIELDS:
            pinned[key] = LOOPBACK_URL
        elif key in ADDRESS_FIELDS and item is not None:
            pinned[key] = LOOPBACK_IP
        else:
            pinned[key] = on_loopback(item)
    return pinned


def prepare(case: schemathesis.Case, *, in_business: bool) -> None:
    """Keep URLs and addresses on loopback; with ``in_business``, name the business that
    exists, so that the rest of the request reaches the handler, not just the scope check."""
    case.body = on_loopback(case.body)
    if case.query:
        case.query = on_loopback(case.query)
    for container in (case.body, case.query):
        if in_business and isinstance(container, dict) and "bk_biz_id" in container:
            container.pop("bk_scope_type", None)
            container.pop("bk_scope_id", None)
            container["bk_biz_id"] = BUSINESS


def problem_with(response: Any, raw_ok: bool) -> str | None:
    """What is wrong with an answer (schemathesis' Response), or None."""
    status = response.status_code
    if status >= 500:
        return f"HTTP {status}"
    # schemathesis keeps each header as a list of values
    media = " ".join(response.headers.get("content-type", []))
    if raw_ok and status == 200 and "json" not in media:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {status}, not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict) or not {"result", "code", "message"} <= set(body):
        return f"HTTP {status}, not the envelope: {str(body)[:200]}"
    if not isinstance(body["result"], bool) or not isinstance(body["code"], int):
        return f"envelope of the wrong types: {str(body)[:200]}"
    if body["code"] == INTERNAL_ERROR:
        return f"internal error: {body['message']}"
    if body["result"] is not (body["code"] == 0):
        return f"result and code disagree: {str(body)[:200]}"
    if body["result"] and status != 200:
        return f"success with HTTP {status}"
    if not body["result"] and (status not in ERROR_STATUSES or not body["message"]):
        return f"error with HTTP {status}: {str(body)[:200]}"
    return None


def out_of_range(node: Any) -> Any:
    """The spec with every bounded integer just past its bounds (ids past 64 bits, …)."""
    if isinstance(node, list):
        return [out_of_range(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "integer" and ("minimum" in node or "maximum" in node):
        beyond = []
        if "maximum" in node:
            beyond.append({"type": "integer", "minimum": node["maximum"] + 1})
        if "minimum" in node:
            beyond.append({"type": "integer", "maximum": node["minimum"] - 1})
        return {"anyOf": beyond}
    return {k: out_of_range(v) for k, v in node.items()}


@dataclass
class Run:
    base: str
    headers: dict[str, str]
    session: requests.Session = field(default_factory=requests.Session)
    sent: int = 0
    failures: list[str] = field(default_factory=list)

    def operation(self, operation: Any, strategy: Any, examples: int, *, in_business: bool,
                  raw_ok: bool) -> None:
        """Send ``examples`` drawn cases; keep the first problem of the operation."""
        label = operation.label

        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            prepare(case, in_business=in_business)
            response = case.call(base_url=self.base, session=self.session,
                                 headers=self.headers, timeout=30)
            self.sent += 1
            problem = problem_with(response, raw_ok)
            if problem and not any(f.startswith(label + ":") for f in self.failures):
                curl = case.as_curl_command(headers=self.headers)
                self.failures.append(f"{label}: {problem}\n  {curl}")

        run()


def fuzz(spec: dict[str, Any], base: str, headers: dict[str, str]) -> Run:
    """Run every operation of ``spec`` against the server at ``base``."""
    schemas = {"documented": schemathesis.openapi.from_dict(spec),
               "out_of_range": schemathesis.openapi.from_dict(out_of_range(spec))}
    variants = {
        name: {r.ok().label: r.ok() for r in schema.get_all_operations()}
        for name, schema in schemas.items()
    }
    run = Run(base, headers)
    run.session.trust_env = False  # never a proxy: the server is on loopback
    for label, operation in variants["documented"].items():
        answers = spec["paths"][operation.path][operation.method.lower()]["responses"]
        raw_ok = any("json" not in media for media in answers["200"]["content"])
        for variant, mode, examples in PASSES:
            strategy = variants[variant][label].as_strategy(generation_mode=mode)
            run.operation(operation, strategy, examples,
                          in_business=mode == GenerationMode.POSITIVE, raw_ok=raw_ok)
    run.session.close()
    return run


async def test_every_operation_answers_the_envelope_under_generated_input(
    running: Running,
) -> None:
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        spec = (await http.get("/openapi.json")).json()
    assert running.url.startswith("http://127.0.0.1:"), running.url
    started = time.monotonic()
    run = await asyncio.to_thread(fuzz, spec, running.url, running.wire.headers())
    elapsed = time.monotonic() - started
    operations = sum(len(ops) for ops in spec["paths"].values())
    assert run.sent >= operations * 3, (run.sent, operations)
    assert not run.failures, "\n".join(run.failures)
    # the server is still whole afterwards
    answer = await running.wire.get("/api/jobfleet/v1/audit", {})
    assert answer["result"] is True, answer
    print(f"fuzz: {operations} operations, {run.sent} requests, {elapsed:.1f} s")



async def test_openapi_documents_every_request(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        spec = (await http.get("/openapi.json")).json()
    models = spec["components"]["schemas"]
    assert set(models["Envelope"]["required"]) == {"result", "code", "message"}
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert "Envelope" in str(operation["responses"].get("default")), where
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name and p["in"] == "path"
                           for p in operation.get("parameters", [])), (where, name)
            if method in ("post", "put"):
                content = operation["requestBody"]["content"]
                (media, body), = content.items()
                if media == "application/json":
                    model = models[body["schema"]["$ref"].rsplit("/", 1)[1]]
                    assert model["properties"], where
                    for ref in re.findall(r"'\$ref': '#/components/schemas/(\w+)'", str(model)):
                        assert ref in models, (where, ref)
                else:
                    assert body["schema"]["format"] == "binary", where
    execute = spec["paths"]["/api/c/compapi/v2/jobv3/fast_execute_script"]["post"]
    model = models[execute["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                   .rsplit("/", 1)[1]]
    assert {"script_content", "target_server", "bk_scope_id", "callback_url"} <= set(
        model["properties"])
    status = spec["paths"]["/api/c/compapi/v2/jobv3/get_job_instance_status"]["get"]
    assert {p["name"] for p in status["parameters"]} >= {"job_instance_id", "bk_biz_id"}
    assert next(p for p in status["parameters"] if p["name"] == "job_instance_id")["required"]
