from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from jobfleet.cli import _client
from jobfleet.cli._settings import Settings
from jobfleet.cli.main import app
from jobfleet.sdk import JobClient

BK = "/api/bk-job/prod/api/v3/"
ADMIN = "/api/jobfleet/v1"


@dataclass
class FakeHost:
    host_id: int
    ip: str
    status: int = 9
    exit_code: int | None = 0
    log: str = ""
    cloud: int = 0


@dataclass
class FakeServer:
    """A jobfleet server in a MockTransport: one job (77, step 88) and an admin API."""

    hosts: list[FakeHost] = field(default_factory=list)
    job_status: int = 3
    polls_until_done: int = 0
    requests: list[httpx.Request] = field(default_factory=list)
    submitted: dict[str, Any] = field(default_factory=dict)
    admin_answers: dict[tuple[str, str], Any] = field(default_factory=dict)
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    settings: Settings | None = None
    polls: int = 0
    # plan 12's variables, as get_job_plan_detail lists them
    plan_vars: list[str] = field(default_factory=lambda: ["version", "db_pw", "targets"])

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        name = path.removeprefix(BK) if path.startswith(BK) else path.removeprefix(ADMIN)
        if name in self.errors:
            code, message = self.errors[name]
            return httpx.Response(200, json={"result": False, "code": code, "message": message})
        if path.startswith(ADMIN):
            data = self.admin_answers.get((request.method, name), {})
            return self.ok(data)
        if name in ("fast_execute_script", "execute_job_plan"):
            self.submitted = json.loads(request.content)
            return self.ok(
                {"job_instance_id": 77, "job_instance_name": "x", "step_instance_id": 88}
            )
        if name == "get_cron_list":
            return self.ok({"start": 0, "length": 1000, "total": 0, "data": []})
        if name == "get_job_plan_detail":
            return self.ok({"id": 12, "global_var_list": [{"id": i, "name": n} for i, n in
                                                          enumerate(self.plan_vars, 1)]})
        if name == "get_job_instance_status":
            self.polls += 1
            return self.ok(self.status(request.url.params.get("return_ip_result") == "true"))
        if name == "batch_get_job_instance_ip_log":
            ids = set(json.loads(request.content)["host_id_list"])
            logs = [
                {"bk_host_id": h.host_id, "ip": h.ip, "bk_cloud_id": h.cloud, "log_content": h.log}
                for h in self.hosts
                if h.host_id in ids
            ]
            return self.ok({"log_type": 1, "script_task_logs": logs})
        return httpx.Response(404)

    @staticmethod
    def ok(data: Any) -> httpx.Response:
        return httpx.Response(200, json={"result": True, "code": 0, "data": data})

    def status(self, with_hosts: bool) -> dict[str, Any]:
        done = self.polls > self.polls_until_done
        step: dict[str, Any] = {
            "step_instance_id": 88,
            "name": "deploy step",
            "type": 1,
            "status": self.job_status if done else 2,
            "total_time": 1500,
        }
        if with_hosts:
            step["step_ip_result_list"] = [
                {
                    "bk_host_id": h.host_id,
                    "ip": h.ip,
                    "bk_cloud_id": h.cloud,
                    "status": h.status if done else 7,
                    "exit_code": h.exit_code if done else None,
                    "tag": "",
                }
                for h in self.hosts
            ]
        return {
            "finished": done,
            "job_instance": {
                "job_instance_id": 77,
                "name": "deploy web",
                "status": self.job_status if done else 2,
                "create_time": 1_700_000_000_000,
                "total_time": 1500,
                "bk_scope_type": "biz",
                "bk_scope_id": "2",
                "bk_biz_id": 2,
            },
            "step_instance_list": [step],
        }

    def names(self) -> list[str]:
        return [r.url.path.rsplit("/", 1)[1] for r in self.requests]

    def admin_requests(self) -> list[tuple[str, str, Any]]:
        return [
            (
                r.method,
                r.url.raw_path.decode().removeprefix(ADMIN),
                json.loads(r.content) if r.content else None,
            )
            for r in self.requests
            if r.url.path.startswith(ADMIN)
        ]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No JOBFLEET_* from the developer's shell, and a HOME without a config file."""
    import os

    for key in list(os.environ):
        if key.startswith("JOBFLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    fake = FakeServer(
        hosts=[
            FakeHost(1, "127.0.0.1", log="starting\nstep one\nstep two\nall done\n"),
            FakeHost(2, "127.0.0.2", log="hello from 2\n"),
        ]
    )

    def make_client(settings: Settings) -> JobClient:
        fake.settings = settings
        return JobClient(
            settings.server,
            settings.app_code or "",
            settings.app_secret or "",
            settings.username,
            biz=settings.biz,
            transport=httpx.MockTransport(fake.handle),
        )

    monkeypatch.setattr(_client, "make_client", make_client)
    yield fake


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> Result:
        base = ["--app-code", "app", "--app-secret", "topsecret"]
        return self.runner.invoke(app, [*base, *args], env=env, input=input)

    def bare(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.runner.invoke(app, list(args), env=env)


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at the terminal width; long temporary paths must not split what tests look for."""
    monkeypatch.setenv("COLUMNS", "1000")
