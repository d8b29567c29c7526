"""The ``jobfleet`` command: global options and the job commands (run, status, logs, hosts)."""

from __future__ import annotations

import base64
import os
import sys
import time
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from jobfleet import __version__
from jobfleet.cli import (
    _pipe,
    _progress,
    _render,
    _targets,
    audit,
    cron,
    daemons,
    files,
    heal,
    jobs,
    notify,
    templates,
    tokens,
    topo,
)
from jobfleet.cli._context import (
    AccountOption,
    BizOption,
    CliContext,
    CloudOption,
    HostIdOption,
    HostOption,
    JsonOption,
    PollOption,
    ReportingGroup,
    TimeoutOption,
    cli_context,
    interrupted,
    lost_track,
)
from jobfleet.cli._scripts import check_param, load_script
from jobfleet.cli._settings import DEFAULT_CONFIG
from jobfleet.cli._sigpipe import closed_pipe_ends_as_sigpipe
from jobfleet.cli._terminal import printable
from jobfleet.cli.admin import admin_app
from jobfleet.sdk import JobApiError

if TYPE_CHECKING:
    from jobfleet.sdk import JobProgress

app = typer.Typer(
    name="jobfleet",
    cls=ReportingGroup,
    help="Run scripts on a fleet of hosts through a jobfleet (bk-job compatible) server.",
    no_args_is_help=True,
    # a traceback's locals would include the app secret
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(admin_app, name="admin")
files.register(app)
templates.register(app)
cron.register(app)
audit.register(app)
notify.register(app)
heal.register(app)
topo.register(app)
daemons.register(app)
jobs.register(app)
tokens.register(app)

# setting → (callback parameter, flag, environment variable)
_GLOBAL_OPTIONS = {
    "server": ("server", "--server", "JOBFLEET_SERVER"),
    "app_code": ("app_code", "--app-code", "JOBFLEET_APP_CODE"),
    "app_secret": ("app_secret", "--app-secret", "JOBFLEET_APP_SECRET"),
    "username": ("user", "--user", "JOBFLEET_USERNAME"),
    "biz": ("biz", "--biz", "JOBFLEET_BIZ"),
}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"jobfleet {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="JOBFLEET_SERVER",
            help="Server URL (default: http://127.0.0.1:8080).",
        ),
    ] = None,
    app_code: Annotated[
        str | None, typer.Option("--app-code", envvar="JOBFLEET_APP_CODE", help="App code.")
    ] = None,
    app_secret: Annotated[
        str | None,
        typer.Option(
            "--app-secret",
            envvar="JOBFLEET_APP_SECRET",
            help="App secret; on the command line every user sees it in ps: prefer the "
            "environment variable or the config file.",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", envvar="JOBFLEET_USERNAME", help="User to act as (default: admin)."),
    ] = None,
    biz: Annotated[
        int | None,
        typer.Option("--biz", envvar="JOBFLEET_BIZ", help="Default business id (default: 2)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="JOBFLEET_CONFIG",
            help="TOML file with server, app_code, app_secret, username, biz, token "
            f"(default: {DEFAULT_CONFIG}).",
            dir_okay=False,
        ),
    ] = None,
    bootstrap: Annotated[
        Path | None,
        typer.Option(
            "--bootstrap",
            envvar="JOBFLEET_BOOTSTRAP",
            help="A server's bootstrap.json to take the URL and admin credentials from.",
            dir_okay=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """Global options; each falls back to its environment variable, then the bootstrap
    file, then the config file, then the default."""
    values: dict[str, Any] = {
        "server": server,
        "app_code": app_code,
        "app_secret": app_secret,
        "username": user,
        "biz": biz,
    }
    given: dict[str, tuple[Any, str] | None] = {}
    for name, (param, flag, envvar) in _GLOBAL_OPTIONS.items():
        value = values[name]
        source = ctx.get_parameter_source(param)
        from_env = source is not None and source.name == "ENVIRONMENT"
        given[name] = None if value is None else (value, envvar if from_env else flag)
    # a secret: from the environment (or the config file) only, never from the command line
    token = os.environ.get("JOBFLEET_TOKEN")
    given["token"] = (token, "JOBFLEET_TOKEN") if token else None
    ctx.obj = CliContext(
        given=given,
        config=config if config is not None else DEFAULT_CONFIG,
        config_required=config is not None,
        bootstrap=bootstrap,
    )


def _scope(biz: int | None) -> dict[str, Any]:
    return {} if biz is None else {"bk_scope_type": "biz", "bk_scope_id": str(biz)}


@app.command()
def run(
    ctx: typer.Context,
    host: HostOption = None,
    host_id: HostIdOption = None,
    group: _targets.GroupOption = None,
    module: _targets.ModuleOption = None,
    set_: _targets.SetOption = None,
    label: _targets.LabelOption = None,
    command: Annotated[
        str | None, typer.Option("--command", "-c", help="Script text to run.")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Script file to run ('-' for stdin).")
    ] = None,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang",
            "-l",
            help="shell, bat, perl, python, powershell or 1-5 (default: from the file "
            "extension, else shell).",
        ),
    ] = None,
    param: Annotated[str, typer.Option("--param", "-p", help="Script arguments.")] = "",
    account: AccountOption = "root",
    timeout: TimeoutOption = 7200,
    cloud: CloudOption = 0,
    biz: BizOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Task name.")] = None,
    poll_interval: PollOption = 0.5,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print the output live, host-prefixed.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Run a script on hosts and wait for it; exit 0 if the job succeeded, 1 if not."""
    # the SDK's flow module brings httpx: loaded when the command runs, not for --help
    from jobfleet.sdk import target_server

    cli = cli_context(ctx)
    script, language = load_script(command, file, lang)
    check_param(param)
    chosen = _targets.selection(group, module, set_, label)
    _targets.require_some(host, host_id, chosen)
    if stream:
        with cli.client() as client:
            target = _targets.resolve_or_fail(cli, client, chosen, biz)
            try:
                data = client.fast_execute_script(
                    script_content=base64.b64encode(script).decode(),
                    script_language=int(language),
                    script_param=base64.b64encode(param.encode()).decode() if param else None,
                    account_alias=account,
                    timeout=timeout,
                    target_server=target_server(host, host_id, cloud, target),
                    task_name=name,
                    **_scope(biz if biz is not None else cli.settings.biz),
                )
            except KeyboardInterrupt:
                interrupted(cli, None)
            status = jobs.follow_to_end(cli, client, int(data["job_instance_id"]), json_out)
        raise typer.Exit(1 if status in jobs.FAILED else 0)
    seen: list[JobProgress] = []
    started = time.monotonic()
    with cli.client() as client, _progress.RunProgress(cli.err) as bar:

        def on_progress(progress: JobProgress) -> None:
            seen[:] = [progress]
            bar.update(progress)

        target = _targets.resolve_or_fail(cli, client, chosen, biz)
        try:
            result = client.execute_and_wait(
                script,
                hosts=host or None,
                host_ids=host_id or None,
                target=target,
                bk_cloud_id=cloud,
                language=int(language),
                params=param,
                account=account,
                timeout=timeout,
                biz=biz,
                task_name=name,
                poll_interval=poll_interval,
                on_progress=on_progress,
            )
        except KeyboardInterrupt:
            interrupted(cli, seen[-1].job_instance_id if seen else None)
        except JobApiError as exc:
            if not seen:
                raise
            lost_track(cli, exc, seen[-1].job_instance_id)
    elapsed = time.monotonic() - started
    if json_out:
        cli.out.out(_render.to_json(result.to_dict() | {"elapsed": round(elapsed, 3)}))
    else:
        cli.out.print(_render.host_table(result.hosts, width=_render.excerpt_width(cli.out)))
        cli.out.print(_render.result_summary(result, elapsed))
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def status(
    ctx: typer.Context,
    job: Annotated[int, typer.Argument(metavar="JOB", help="Job instance id.")],
    step: Annotated[
        int | None, typer.Option("--step", help="Step instance id (default: the latest).")
    ] = None,
    biz: BizOption = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print get_job_instance_status data as JSON.")
    ] = False,
) -> None:
    """Show a job, its steps and the tail of one step's host logs; exit 1 if the job failed."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.get_job_instance_status(job, return_ip_result=True, **_scope(biz))
        failed = (data.get("job_instance") or {}).get("status") in jobs.FAILED
        if json_out:
            cli.out.out(_render.to_json(data))
            raise typer.Exit(1 if failed else 0)
        result = client.get_result(job, step, biz=biz)
    cli.out.print(_render.job_overview(data))
    if len(data.get("step_instance_list") or []) > 1:
        cli.out.print(Text(f"\nhosts of step {result.step_instance_id}", style="bold"))
    else:
        cli.out.print()
    cli.out.print(_render.host_table(result.hosts, width=_render.excerpt_width(cli.out)))
    cli.out.print(_render.result_summary(result))
    if failed:
        raise typer.Exit(1)


@app.command()
def logs(
    ctx: typer.Context,
    job: Annotated[int, typer.Argument(metavar="JOB", help="Job instance id.")],
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host", "-H", help="Only this IP; with one --host the raw log alone is printed."
        ),
    ] = None,
    step: Annotated[
        int | None, typer.Option("--step", help="Step instance id (default: the latest).")
    ] = None,
    biz: BizOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print the output live until the job ends.")
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the result as JSON (with -f: each live event, one per line)."
        ),
    ] = False,
) -> None:
    """Print each host's full log of a job step; exit 1 if the job failed.

    For file steps: one line per file."""
    cli = cli_context(ctx)
    if follow:
        with cli.client() as client:
            status = jobs.follow_to_end(cli, client, job, json_out)
        raise typer.Exit(1 if status in jobs.FAILED else 0)
    with cli.client() as client:
        result = client.get_result(job, step, ips=host, biz=biz)
    if json_out:
        cli.out.out(_render.to_json(result.to_dict()))
        raise typer.Exit(1 if not result.ok and result.finished else 0)
    from jobfleet.sdk import parse_host

    found = {h.ip for h in result.hosts}
    missing = [ip for ip in host or [] if parse_host(ip)["ip"] not in found]
    if host and len(host) == 1:
        if not result.hosts:
            cli.fail(
                f"host {host[0]} is not a target of step {result.step_instance_id} of job {job}"
            )
        # raw bytes for pipes: no header, no markup, no wrapping; a terminal is shown
        # the host's control characters instead of obeying them
        text = _render.host_log_text(result.hosts[0])
        _pipe.write_all(cli.out.file, printable(text) if cli.out.is_terminal else text)
        return
    for ip in missing:
        cli.err.print(Text(f"host {ip} is not a target of this step", style="yellow"))
    _render.print_host_logs(cli.out, result.hosts)
    if not result.ok and result.finished:
        raise typer.Exit(1)


@app.command()
def hosts(
    ctx: typer.Context,
    biz: BizOption = None,
    alive: Annotated[
        bool | None, typer.Option("--alive/--dead", help="Only hosts whose agent is (not) up.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """List the hosts of a business and their agents."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_hosts(
            bk_biz_id=biz if biz is not None else cli.settings.biz, alive=alive
        )
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    cli.out.print(_render.hosts_table(rows))
    up = sum(1 for r in rows if r.get("alive"))
    cli.out.print(_render.counted(len(rows), "host", f", {up} alive"))


@app.command()
def whoami(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Show the server, the credentials in use and what the server knows of them."""
    cli = cli_context(ctx)
    settings = cli.settings
    with cli.client() as client:
        me = client.whoami()
    if json_out:
        cli.out.out(_render.to_json({"server": settings.server, "biz": settings.biz, **me}))
        return
    # a personal token names its own user (and app): the app settings are not used
    token = settings.sources["token"] if settings.token else None
    grid = _render.records_table(
        [
            {"setting": "server", "value": settings.server, "from": settings.sources["server"]},
            {
                "setting": "app",
                "value": me.get("app_code"),
                "from": token or settings.sources["app_code"],
            },
            {
                "setting": "app secret",
                "value": "(not used)" if token else "(hidden)",
                "from": "-" if token else settings.sources["app_secret"],
            },
            {
                "setting": "personal token",
                "value": "(hidden, in use)" if settings.token else "-",
                "from": settings.sources["token"],
            },
            {
                "setting": "user",
                "value": me.get("username"),
                "from": token or settings.sources["username"],
            },
            {"setting": "admin", "value": bool(me.get("is_admin")), "from": "server"},
            {"setting": "scopes", "value": _scopes_text(me), "from": "server"},
            {"setting": "default biz", "value": settings.biz, "from": settings.sources["biz"]},
        ],
        ["setting", "value", "from"],
    )
    cli.out.print(grid)


def _scopes_text(me: dict[str, Any]) -> Any:
    """An administrator holds every business with no grant of its own: an empty list
    would read as none. An app limited to some businesses still limits them."""
    scopes = me.get("scopes") or []
    if scopes or not me.get("is_admin"):
        return scopes
    limit = (me.get("app") or {}).get("allowed_biz", "any")
    if not isinstance(limit, list):
        return "every business (administrator)"
    listed = ", ".join(f"biz:{b}" for b in limit)
    return f"{listed} (administrator, limited by the app)"


def _evaluate_annotations(group: typer.Typer) -> None:
    """Typer reads every command's annotations each time it builds the command tree, at
    every start and for every command, not only the one run; here they are strings
    (``from __future__ import annotations``) that it evaluates again and again (~40 ms
    of each start). Evaluated once, they are the objects typer wants."""
    callbacks = [info.callback for info in group.registered_commands]
    if group.registered_callback is not None:
        callbacks.append(group.registered_callback.callback)
    for callback in callbacks:
        if callback is not None:
            callback.__annotations__ = typing.get_type_hints(callback, include_extras=True)
    for info in group.registered_groups:
        if info.typer_instance is not None:
            _evaluate_annotations(info.typer_instance)


_evaluate_annotations(app)


def main() -> None:
    # httpx's package imports its own command line client when it can (click, pygments,
    # rich's progress and syntax modules: ~20 ms of every command); this process never
    # calls it, and httpx falls back to a stub for ``httpx.main`` when that import fails
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    # click and Rich end a write to a closed pipe (`jobfleet logs JOB | head -1`) with
    # status 1; 1 means "the job failed" here
    with closed_pipe_ends_as_sigpipe():
        app()


if __name__ == "__main__":
    main()
