"""Job control: ``jobs`` (the history), ``terminate``, ``step …``, ``follow`` (live output)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.text import Text

from jobfleet.cli import _history as history
from jobfleet.cli import _render
from jobfleet.cli._context import (
    BizOption,
    CliContext,
    JsonOption,
    cli_context,
    interrupted,
    lost_track,
)
from jobfleet.cli._terminal import printable
from jobfleet.sdk import JobApiError

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
    """Print a job's output live, each line prefixed with its host (with ``json_out``:
    each event as a JSON line); the job's last status.

    On a terminal a host's control characters are shown, not obeyed (``_terminal``);
    a pipe gets the output as the host wrote it."""
    status = 0
    partial: dict[int, tuple[str, str]] = {}

    def shown(line: str) -> str:
        # a CRLF line end (Windows hosts) is a line end, not a control character
        return printable(line.removesuffix("\r")) if out.is_terminal else line

    for event in client.events(job, hosts="all"):
        data = event["data"]
        if event["event"] in ("status", "end"):
            status = int(data["status"])
        if json_out:
            # one event per line (JSON Lines), for jq and friends
            # (what JSON leaves raw, DEL and C1, escaped: the same JSON)
            out.file.write(printable(json.dumps(event, ensure_ascii=False)) + "\n")
        elif event["event"] == "output":
            host = int(data["bk_host_id"])
            text = partial.pop(host, ("", ""))[1] + data["content"]
            lines = text.split("\n")
            if lines[-1]:
                partial[host] = (str(data["ip"]), lines[-1])
            for line in lines[:-1]:
                out.file.write(shown(f"{data['ip']}: {line}") + "\n")
        out.file.flush()
    # a last line without a newline
    for ip, line in partial.values():
        out.file.write(shown(f"{ip}: {line}") + "\n")
    out.file.flush()
    return status


def follow_to_end(cli: CliContext, client: Any, job: int, json_out: bool) -> int:
    """``follow`` on the command's console; Ctrl-C ends it saying the job runs on."""
    try:
        return follow(client, job, cli.out, json_out)
    except KeyboardInterrupt:
        interrupted(cli, job)
    except JobApiError as exc:
        lost_track(cli, exc, job)


def register(app: typer.Typer) -> None:
    @app.command("jobs")
    def jobs(
        ctx: typer.Context,
        biz: BizOption = None,
        status: Annotated[
            str | None,
            typer.Option(
                "--status", help="running, success, failed, terminated, waiting… or a code."
            ),
        ] = None,
        operator: Annotated[str | None, typer.Option("--user", help="Who started it.")] = None,
        name: Annotated[str | None, typer.Option("--name", help="Part of the name.")] = None,
        launch_mode: Annotated[
            str | None, typer.Option("--launch-mode", help="web, api or cron (or 1, 2, 3).")
        ] = None,
        cron: Annotated[int | None, typer.Option("--cron", help="Fired by this cron id.")] = None,
        ip: Annotated[str | None, typer.Option("--ip", help="Had this host as a target.")] = None,
        days: Annotated[
            int, typer.Option("--days", min=1, max=30, help="How far back (at most 30).")
        ] = 7,
        since: Annotated[
            str | None,
            typer.Option("--since", help="Started at or after: 2026-12-01[T10:00], or 2h, 3d ago."),
        ] = None,
        until: Annotated[
            str | None, typer.Option("--until", help="Started before (same forms; default now).")
        ] = None,
        limit: Annotated[
            int, typer.Option("--limit", min=1, max=1000, help="Show at most this many.")
        ] = 50,
        offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many.")] = 0,
        json_out: JsonOption = False,
    ) -> None:
        """List jobs, newest first, with the history page's filters."""
        cli = cli_context(ctx)
        now = int(time.time() * 1000)
        try:
            end = history.when(until, now) if until else now
            begin = history.when(since, now) if since else end - days * 86400_000
            filters = history.filters(
                status=status,
                launch_mode=launch_mode,
                operator=operator,
                name=name,
                cron=cron,
                ip=ip,
            )
        except ValueError as exc:
            cli.fail(f"error: {exc}")
        params: dict[str, Any] = {
            **_scope(biz),
            "create_time_start": begin,
            "create_time_end": end,
            "start": offset,
            "length": limit,
            **filters,
        }
        with cli.client() as client:
            data = client.get_job_instance_list(**params)
        rows = data.get("data") or []
        if json_out:
            cli.out.out(_render.to_json(rows))
            return
        cli.out.print(history.table(rows))
        total = int(data.get("total") or len(rows))
        cli.out.print(_render.counted(len(rows), "job", of=total if total > len(rows) else None))

    @app.command("terminate")
    def terminate(
        ctx: typer.Context,
        job: Annotated[int, typer.Argument(metavar="JOB", help="Job instance id.")],
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
        operation: Annotated[
            str, typer.Argument(metavar="OPERATION", help=" | ".join(STEP_OPERATIONS))
        ],
        job: Annotated[int, typer.Argument(metavar="JOB", help="Job instance id.")],
        step_id: Annotated[
            int | None,
            typer.Option("--step", help="Step instance id (default: the one the job stopped at)."),
        ] = None,
        biz: BizOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Operate a job's step: confirm, stop, retry, retry-all, ignore, next, skip, next-batch."""
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
        ctx: typer.Context,
        job: Annotated[int, typer.Argument(metavar="JOB", help="Job instance id.")],
        json_out: JsonOption = False,
    ) -> None:
        """Print a job's output live (host-prefixed lines); exit 1 if it fails."""
        cli = cli_context(ctx)
        with cli.client() as client:
            status = follow_to_end(cli, client, job, json_out)
        raise typer.Exit(1 if status in FAILED else 0)
