"""What every command shares: settings, consoles, the client, and how failures end the command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from jobfleet.cli import _client
from jobfleet.cli._pipe import PipeConsole
from jobfleet.cli._settings import Settings, SettingsError, resolve_settings
from jobfleet.cli._terminal import ShowControls
from jobfleet.sdk import JobApiError

if TYPE_CHECKING:
    from jobfleet.sdk import JobClient

# exit statuses: 1 is kept for "the job ran and failed"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# options several commands share
HostOption = Annotated[
    list[str] | None,
    typer.Option("--host", "-H", help="Target IP, or CLOUD:IP; repeat for more hosts."),
]
HostIdOption = Annotated[
    list[int] | None, typer.Option("--host-id", help="Target host id; repeatable.")
]
CloudOption = Annotated[int, typer.Option("--cloud", min=0, help="Cloud area of --host IPs.")]
AccountOption = Annotated[str, typer.Option("--account", "-a", help="Execution account alias.")]
TimeoutOption = Annotated[
    int, typer.Option("--timeout", min=1, help="Seconds before the job is killed.")
]
# below this a wait is a busy loop of status calls against the server
MIN_POLL_INTERVAL = 0.05
PollOption = Annotated[
    float,
    typer.Option(
        "--poll-interval",
        min=MIN_POLL_INTERVAL,
        help=f"Seconds between status polls (at least {MIN_POLL_INTERVAL}).",
    ),
]
BizOption = Annotated[
    int | None, typer.Option("--biz", help="Business id (default: the global --biz).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
# a plan's variables, as ``plan run`` and ``cron add`` take them
VarOption = Annotated[
    list[str], typer.Option("--var", help="A variable's value: name=value (repeat).")
]
HostsOption = Annotated[
    list[str],
    typer.Option("--hosts", help="A host variable's hosts: name=ip,cloud:ip (repeat)."),
]
VarFileOption = Annotated[
    list[str],
    typer.Option(
        "--var-file",
        help="A variable's value read from a file ('-' for stdin), one line end "
        "dropped: name=FILE (repeat). For passwords: --var shows in the process list.",
    ),
]

# when output goes to a pipe or file, no line is cut or wrapped: IPs, paths and log lines
# stay whole for grep and awk (Rich would otherwise assume 80 columns, or $COLUMNS)
PIPE_WIDTH = 1 << 16


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout or stderr: the terminal's width on a terminal, else unbounded.

    Strings print as they are (no Rich markup: a name like ``[/x]`` is text, not a
    tag), and control characters from hosts are shown, not sent (``_terminal``)."""
    console = PipeConsole(stderr=stderr, highlight=False, markup=False)
    if not console.is_terminal:
        console = PipeConsole(stderr=stderr, highlight=False, markup=False, width=PIPE_WIDTH)
    console.push_render_hook(ShowControls())
    return console


@dataclass
class CliContext:
    """``ctx.obj`` of every command; settings are resolved on first use, so a bad
    config file does not break commands that never talk to a server."""

    given: dict[str, tuple[Any, str] | None]
    config: Path | None
    config_required: bool
    bootstrap: Path | None
    out: Console = field(default_factory=make_console)
    err: Console = field(default_factory=lambda: make_console(stderr=True))
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = resolve_settings(
                self.given,
                config=self.config,
                config_required=self.config_required,
                bootstrap=self.bootstrap,
            )
        return self._settings

    def client(self) -> JobClient:
        return _client.make_client(self.settings)

    def fail(self, message: str) -> NoReturn:
        self.err.print(Text(message, style="bold red"))
        raise typer.Exit(EXIT_USAGE)


def cli_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_object(CliContext)
    if obj is None:
        # a command invoked without the root callback (e.g. from another program)
        obj = CliContext(given={}, config=None, config_required=False, bootstrap=None)
        ctx.obj = obj
    return obj


def ask_secret(cli: CliContext, label: str, instead: str, *, confirm: bool = False) -> str:
    """A secret typed at a prompt. Standard input that ends before one is typed (a
    script, a pipe with nothing in it) is a usage error that says how to give it
    without a terminal (``instead``); Ctrl-C at the prompt is an interruption. Typer
    ends both as exit status 1, which here means a failed job."""
    try:
        return str(typer.prompt(label, hide_input=True, confirmation_prompt=confirm))
    except typer.Abort as exc:
        # raised "from None" inside the prompt's handler: the cause is still there
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise typer.Exit(EXIT_INTERRUPTED) from None
        cli.fail(f"error: no {label.lower()} given: standard input ended; {instead}")


def interrupted(cli: CliContext, job_instance_id: int | None) -> NoReturn:
    """Ctrl-C while waiting: the job lives on, so say where to find it: ``logs -f`` picks
    up the output where the wait left it, ``status`` tells how it stands."""
    if job_instance_id is None:
        cli.err.print(Text("interrupted; the job may have been submitted", style="yellow"))
    else:
        cli.err.print(
            Text(
                f"interrupted; job {job_instance_id} keeps running on the server: follow it "
                f"with `jobfleet logs -f {job_instance_id}`, or see how it stands with "
                f"`jobfleet status {job_instance_id}`",
                style="yellow",
            )
        )
    raise typer.Exit(EXIT_INTERRUPTED)


def lost_track(cli: CliContext, exc: JobApiError, job_instance_id: int | None) -> NoReturn:
    """The server stopped answering (a node killed, restarted, out of reach) while the
    command waited on a job it had submitted. The job is in the store and runs on (in a
    cluster, another node takes it over): the error alone would read as a failed job
    whose id the operator never saw, so say which job it was and how to find it."""
    cli.err.print(Text(describe_api_error(exc), style="bold red"))
    if job_instance_id is not None:
        cli.err.print(
            Text(
                f"job {job_instance_id} was submitted and may still be running: follow it "
                f"with `jobfleet logs -f {job_instance_id}`, or see how it stands with "
                f"`jobfleet status {job_instance_id}` (in a cluster, through another "
                "node: --server)",
                style="yellow",
            )
        )
    raise typer.Exit(EXIT_USAGE)


def describe_api_error(exc: JobApiError) -> str:
    text = f"error: {exc.message}" if exc.code == -1 else f"error {exc.code}: {exc.message}"
    actions = [a.get("id") or a.get("name") for a in (exc.permission or {}).get("actions", [])]
    if actions:
        text += f" (missing permission: {', '.join(str(a) for a in actions)})"
    return text


class ReportingGroup(TyperGroup):
    """Turns API and settings failures into a red line and exit status 2, not a traceback."""

    # typed Any: typer either uses click or a vendored copy, whose Context types differ
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except JobApiError as exc:
            _report(ctx, describe_api_error(exc))
        except SettingsError as exc:
            _report(ctx, f"error: {exc}")


def _report(ctx: Any, message: str) -> NoReturn:
    obj = ctx.find_object(CliContext)
    err = obj.err if obj is not None else make_console(stderr=True)
    err.print(Text(message, style="bold red"))
    raise typer.Exit(EXIT_USAGE)
