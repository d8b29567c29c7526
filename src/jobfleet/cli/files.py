"""``jobfleet push`` and ``jobfleet fetch``: files from here to hosts, and from hosts to here."""

from __future__ import annotations

import posixpath
import time
from collections import Counter
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from jobfleet.cli import _progress, _render, _targets
from jobfleet.cli._context import (
    EXIT_USAGE,
    AccountOption,
    BizOption,
    CloudOption,
    HostIdOption,
    HostOption,
    JsonOption,
    PollOption,
    TimeoutOption,
    cli_context,
    interrupted,
    lost_track,
)
from jobfleet.sdk import FileLogStatus, JobApiError, source_label

if TYPE_CHECKING:
    from jobfleet.sdk import ExecutionResult, HostResult, JobClient, TransferProgress


class Mode(StrEnum):
    strict = "strict"
    force = "force"


# bk-job transfer_mode numbers
TRANSFER_MODES = {Mode.strict: 1, Mode.force: 2}
# a fetched file's state in the table
ARRIVED, SAVED, NOT_SAVED = "arrived", "saved", "not saved"


def register(app: typer.Typer) -> None:
    app.command()(push)
    app.command()(fetch)


def push(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="Local files to send.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    to: Annotated[str, typer.Option("--to", help="Absolute directory on the hosts to write into.")],
    host: HostOption = None,
    host_id: HostIdOption = None,
    group: _targets.GroupOption = None,
    module: _targets.ModuleOption = None,
    set_: _targets.SetOption = None,
    label: _targets.LabelOption = None,
    account: AccountOption = "root",
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode", help="strict: fail hosts where the directory is missing; force: create it."
        ),
    ] = Mode.force,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Speed limit per host in MB/s.")
    ] = None,
    timeout: TimeoutOption = 7200,
    cloud: CloudOption = 0,
    biz: BizOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Task name.")] = None,
    poll_interval: PollOption = 0.5,
    json_out: JsonOption = False,
) -> None:
    """Copy local files to a directory on hosts; exit 0 if every host got them, 1 if not."""
    cli = cli_context(ctx)
    chosen = _targets.selection(group, module, set_, label)
    _targets.require_some(host, host_id, chosen)
    if not to.startswith("/"):
        raise typer.BadParameter(f"{to!r} is not an absolute path", param_hint="--to")
    job: list[int] = []
    started = time.monotonic()
    with cli.client() as client, _progress.TransferBar(cli.err) as bar:
        target = _targets.resolve_or_fail(cli, client, chosen, biz)

        def on_progress(progress: TransferProgress) -> None:
            job[:] = [progress.job_instance_id]
            bar.update(progress)

        try:
            result = client.transfer_and_wait(
                files,
                hosts=host or None,
                host_ids=host_id or None,
                target=target,
                bk_cloud_id=cloud,
                target_path=to,
                account=account,
                transfer_mode=TRANSFER_MODES[mode],
                upload_speed_limit=limit,
                download_speed_limit=limit,
                timeout=timeout,
                biz=biz,
                task_name=name,
                poll_interval=poll_interval,
                on_progress=on_progress,
                on_upload=bar.upload,
            )
        except KeyboardInterrupt:
            interrupted(cli, job[-1] if job else None)
        except JobApiError as exc:
            if not job:
                raise
            lost_track(cli, exc, job[-1])
        except (OSError, ValueError) as exc:
            # the local files: unreadable, changed since the command started, or clashing
            cli.fail(f"error: {exc}")
    elapsed = time.monotonic() - started
    if json_out:
        extra = {"bytes_done": result.bytes_done, "elapsed": round(elapsed, 3)}
        cli.out.out(_render.to_json(result.to_dict() | extra))
    else:
        cli.out.print(
            _render.transfer_table(result.hosts, width=_render.excerpt_width(cli.out))
        )
        cli.out.print(_render.transfer_summary(result, elapsed))
    raise typer.Exit(0 if result.ok else 1)


def fetch(
    ctx: typer.Context,
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH", help="Absolute file paths on the hosts (wildcards allowed)."
        ),
    ],
    host: HostOption = None,
    host_id: HostIdOption = None,
    group: _targets.GroupOption = None,
    module: _targets.ModuleOption = None,
    set_: _targets.SetOption = None,
    label: _targets.LabelOption = None,
    to: Annotated[
        Path,
        typer.Option(
            "--to", file_okay=False, help="Local directory to save into (default: the current one)."
        ),
    ] = Path("."),
    account: AccountOption = "root",
    timeout: TimeoutOption = 7200,
    cloud: CloudOption = 0,
    biz: BizOption = None,
    poll_interval: PollOption = 0.5,
    json_out: JsonOption = False,
) -> None:
    """Bring files from hosts into DIR/<cloud>_<ip>/; exit 1 if a host failed, 2 if not saved.

    Exit 0 when every file arrived and was saved."""
    cli = cli_context(ctx)
    chosen = _targets.selection(group, module, set_, label)
    _targets.require_some(host, host_id, chosen)
    for path in paths:
        if not path.startswith("/"):
            raise typer.BadParameter(f"{path!r} is not an absolute path", param_hint="PATHS")
    started = time.monotonic()
    job_id: int | None = None
    with cli.client() as client:
        target = _targets.resolve_or_fail(cli, client, chosen, biz)
        try:
            with _progress.RunProgress(cli.err) as bar:
                submitted = client.fetch_files(
                    paths,
                    hosts=host or None,
                    host_ids=host_id or None,
                    target=target,
                    bk_cloud_id=cloud,
                    account=account,
                    timeout=timeout,
                    biz=biz,
                )
                job_id = int(submitted["job_instance_id"])
                step_id = int(submitted["step_instance_id"])
                client.wait_for_job(
                    job_id,
                    step_instance_id=step_id,
                    biz=biz,
                    poll_interval=poll_interval,
                    on_progress=bar.update,
                )
            result = client.get_result(job_id, step_id, biz=biz)
            fetched = client.fetched_files(job_id, biz=biz)
            rows = fetch_rows(result, fetched)
            with _progress.TransferBar(cli.err) as bytes_bar:
                _save_all(client, rows, to, bytes_bar)
        except KeyboardInterrupt:
            interrupted(cli, job_id)
        except JobApiError as exc:
            if job_id is None:
                raise
            lost_track(cli, exc, job_id)
    elapsed = time.monotonic() - started
    if json_out:
        cli.out.out(
            _render.to_json(
                {
                    "job_instance_id": job_id,
                    "ok": result.ok,
                    "files": rows,
                    "elapsed": round(elapsed, 3),
                }
            )
        )
    else:
        cli.out.print(_render.fetch_table(rows, width=_render.excerpt_width(cli.out)))
        cli.out.print(_render.result_summary(result, elapsed))
    unsaved = sum(1 for row in rows if row["state"] == NOT_SAVED)
    if unsaved:
        files = _render.noun_for(unsaved, "file")
        cli.err.print(Text(f"{unsaved} fetched {files} could not be saved", style="bold red"))
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(0 if result.ok else 1)


def fetch_rows(result: ExecutionResult, fetched: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fetched file, plus one per host that sent nothing, each with the
    reason when it failed; the same file named twice is kept once."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, str, str]] = set()
    hosts = {h.bk_host_id: h for h in result.hosts}
    for item in fetched:
        key = (
            int(item.get("bk_cloud_id") or 0),
            str(item.get("ip") or ""),
            _normal(str(item["path"])),
        )
        if key in seen:
            continue
        seen.add(key)
        row = {**item, "saved": None, "error": ""}
        host = hosts.get(item.get("bk_host_id"))
        if item.get("status") == FileLogStatus.SUCCESS and item.get("file_id"):
            row["state"] = ARRIVED
        else:
            row["state"] = _render.file_status_label(int(item.get("status") or 0))
            row["error"] = _file_error(host, str(item["path"])) if host else ""
        rows.append(row)
    sent = {r.get("bk_host_id") for r in rows}
    for host in result.hosts:
        if host.bk_host_id not in sent:
            rows.append(
                {
                    "bk_host_id": host.bk_host_id,
                    "ip": host.ip,
                    "bk_cloud_id": host.bk_cloud_id,
                    "path": None,
                    "file_id": None,
                    "status": None,
                    "saved": None,
                    "state": host.status_name,
                    "error": _render.host_error(host, host.file_logs, None),
                }
            )
    return rows


def _file_error(host: HostResult, path: str) -> str:
    for item in host.file_logs:
        if item.src_path == path and item.log.strip():
            return _render.first_line(item.log, None)
    return _render.host_error(host, host.file_logs, None)


def local_paths(rows: Sequence[dict[str, Any]]) -> list[PurePosixPath | None]:
    """Where each arrived file goes under the destination: ``<cloud>_<ip>/<basename>``.

    When two files of one host share a basename, every file of every host keeps its
    whole remote path under its host's folder instead, so all folders look alike.
    """
    arrived = [r for r in rows if r.get("state") == ARRIVED]
    names = Counter((r.get("bk_host_id"), _basename(str(r["path"]))) for r in arrived)
    mirror = any(count > 1 for count in names.values())
    out: list[PurePosixPath | None] = []
    for row in rows:
        if row.get("state") != ARRIVED:
            out.append(None)
            continue
        folder = source_label(int(row.get("bk_cloud_id") or 0), str(row["ip"])).replace("/", "_")
        remote = str(row["path"])
        relative = _inside(remote) if mirror else _basename(remote)
        out.append(PurePosixPath(folder) / (relative or str(row["file_id"])))
    return out


def _normal(path: str) -> str:
    # normpath alone keeps a leading "//", which POSIX leaves to the implementation
    return posixpath.normpath("/" + path.lstrip("/"))


def _basename(path: str) -> str:
    return posixpath.basename(_normal(path))


def _inside(path: str) -> str:
    """A remote absolute path as a relative one that cannot climb out of its folder."""
    return _normal(path).lstrip("/")


def _save_all(
    client: JobClient, rows: list[dict[str, Any]], dest: Path, bar: _progress.TransferBar
) -> None:
    targets = local_paths(rows)
    total = sum(int(r.get("size") or 0) for r, t in zip(rows, targets, strict=True) if t)
    done = 0
    for row, target in zip(rows, targets, strict=True):
        if target is None:
            continue
        local = dest / target

        def report(received: int, before: int = done) -> None:
            bar.download(before + received, total)

        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(str(row["file_id"]), local, on_progress=report)
        except (JobApiError, OSError) as exc:
            row["state"], row["error"] = NOT_SAVED, str(exc)
        else:
            row["state"], row["saved"] = SAVED, str(local)
        done += int(row.get("size") or 0)
