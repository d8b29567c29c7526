"""Job control: ``jobs`` (the history), ``terminate``, ``step …``, ``follow`` (live output)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from rich.text import Text

from jobfleet.cli import _render
from jobfleet.cli._context import BizOption, JsonOption, cli_context

FAILED = {4, 8, 9, 11, 13, 14}
STEP_OPERATIONS = {
    "retry": 2,
    "ignore": 3,
    "confirm": 6,
    "retry-all": 8,
    "stop": 9,
    "next": 11,
    "skip": 12,
    "next-batch": 13,
}


def _scope(biz: int | None) -> dict[str, Any]:
    return {} if biz is None else {"bk_scope_type": "biz", "bk_scope_id": str(biz)}


def follow(client: Any, job: int, out: Any, json_out: bool = False) -> int:
    """Print a job's output live, each line prefixed with its host; the job's status."""
    status = 0
    partial: dict[int, str] = {}
    for event in client.events(job, hosts="all"):
        data = event["data"]
        if json_out:
            out.out(_render.to_json(event))
        if event["event"] == "output" and not json_out:
            text = partial.pop(data["bk_host_id"], "") + data["content"]
            lines = text.split("\n")
            if lines[-1]:
                partial[data["bk_host_id"]] = lines[-1]
            for line in lines[:-1]:
                out.file.write(f"{data['ip']}: {line}\n")
            out.file.flush()
        elif event["event"] in ("status", "end"):
            status = int(data["status"])
    return status


def register(app: typer.Typer) -> None:
    @app.command("jobs")
    def jobs(
        ctx: typer.Context,
        biz: BizOption = None,
        status: Annotated[int | None, typer.Option("--status", help="Run status code.")] = None,
        operator: Annotated[str | None, typer.Option("--user", help="Who started it.")] = None,
        name: Annotated[str | None, typer.Option("--name", help="Part of the name.")] = None,
        launch_mode: Annotated[
            int | None, typer.Option("--launch-mode", help="1 web, 2 API, 3 cron.")
        ] = None,
        cron: Annotated[int | None, typer.Option("--cron", help="Fired by this cron.")] = None,
        days: Annotated[int, typer.Option("--days", help="How far back.")] = 7,
        limit: Annotated[int, typer.Option("--limit")] = 50,
        json_out: JsonOption = False,
    ) -> None:
        """List jobs, newest first (the history page's filters)."""
        cli = cli_context(ctx)
        now = int(time.time() * 1000)
        params: dict[str, Any] = {
            **_scope(biz),
            "create_time_start": now - days * 86400_000,
            "create_time_end": now,
            "start": 0,
            "length": limit,
        }
        for key, value in (
            ("status", status),
            ("operator", operator),
            ("job_instance_name", name),
            ("launch_mode", launch_mode),
            ("job_cron_id", cron),
        ):
            if value is not None:
                params[key] = value
        with cli.client() as client:
            data = client.call("get_job_instance_list", params)
        rows = data.get("data") or [] if isinstance(data, dict) else data
        if json_out:
            cli.out.out(_render.to_json(rows))
            return
        cli.out.print(
            _render.records_table(
                [
                    {
                        "id": r.get("id") or r.get("job_instance_id"),
                        "name": r.get("name"),
                        "status": r.get("status"),
                        "operator": r.get("operator"),
                        "created": r.get("create_time"),
                    }
                    for r in rows
                ],
                ["id", "name", "status", "operator", "created"],
            )
        )

    @app.command("terminate")
    def terminate(
        ctx: typer.Context,
        job: Annotated[int, typer.Argument()],
        biz: BizOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Stop a running job."""
        cli = cli_context(ctx)
        with cli.client() as client:
            data = client.call(
                "operate_job_instance",
                {**_scope(biz), "job_instance_id": job, "operation_code": 1},
            )
        if json_out:
            cli.out.out(_render.to_json(data))
        else:
            cli.out.print(f"terminating job {job}")

    @app.command("step")
    def step(
        ctx: typer.Context,
        operation: Annotated[str, typer.Argument(help=" | ".join(STEP_OPERATIONS))],
        job: Annotated[int, typer.Argument()],
        step_id: Annotated[
            int | None, typer.Option("--step", help="Step instance id (default: the latest).")
        ] = None,
        biz: BizOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Operate a job's step: confirm, retry, retry-all, ignore, skip, next, next-batch."""
        cli = cli_context(ctx)
        if operation not in STEP_OPERATIONS:
            cli.fail(f"unknown step operation {operation!r}: {', '.join(STEP_OPERATIONS)}")
        with cli.client() as client:
            if step_id is None:
                status = client.get_job_instance_status(job, **_scope(biz))
                steps = status.get("step_instance_list") or []
                if not steps:
                    cli.fail(f"job {job} has no steps")
                running = [s for s in steps if s.get("status") not in (1, 3, 5)]
                step_id = int((running or steps)[-1]["step_instance_id"])
            data = client.call(
                "operate_step_instance",
                {
                    **_scope(biz),
                    "job_instance_id": job,
                    "step_instance_id": step_id,
                    "operation_code": STEP_OPERATIONS[operation],
                },
            )
        if json_out:
            cli.out.out(_render.to_json(data))
        else:
            cli.out.print(Text(f"{operation}: step {step_id} of job {job}"))

    @app.command("follow")
    def follow_cmd(
        ctx: typer.Context, job: Annotated[int, typer.Argument()], json_out: JsonOption = False
    ) -> None:
        """Print a job's output live (host-prefixed lines); exit 1 if it fails."""
        cli = cli_context(ctx)
        with cli.client() as client:
            status = follow(client, job, cli.out, json_out)
        if status in FAILED:
            sys.exit(1)
