"""The long-running commands: ``server``, ``agent`` and ``demo``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperOption


def _show_version(value: bool) -> None:
    if value:
        from jobfleet import __version__

        typer.echo(f"jobfleet {__version__}")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Print the version and exit"
    ),
]

# Every setting below defaults to None: a flag the operator did not give leaves the
# configuration file's value (or the server's default) alone.
Opt = typer.Option


_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_SIZE_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


class _Shown:
    """A setting's default as ``--help`` writes it: ``{default}`` as the number or word,
    ``{default:duration}`` in the largest whole unit (``24h``), ``{default:size}`` in
    bytes and binary units (``16777216: 16 MiB``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        value = self.value
        units = {"duration": _DURATION_UNITS, "size": _SIZE_UNITS}.get(spec, ())
        for unit, size in units:
            # 24h rather than 1d, as operators write a day
            if int(value) % size == 0 and (int(value) // size > 1 or size == 1):
                whole = f"{int(value) // size}"
                return f"{whole}{unit}" if spec == "duration" else f"{value}: {whole} {unit}"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)


def say_defaults(params: Iterable[object]) -> None:
    """Write the settings' defaults into the help of the ``server`` options that name
    them with ``{default}``: the settings hold each default once."""
    from jobfleet import server_config

    for param in params:
        if isinstance(param, TyperOption) and param.help and "{default" in param.help:
            value = server_config.default(server_config.FLAGS[param.opts[0]])
            param.help = param.help.format(default=_Shown(value))


class ServerCommand(TyperCommand):
    """``server``, whose help reads the defaults from the settings when it is shown: the
    settings load the server's modules, which no other command (nor its help) needs."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        say_defaults(self.params)
        super().format_help(ctx, formatter)


def server(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        Opt(
            "--config",
            envvar="JOBFLEET_SERVER_CONFIG",
            dir_okay=False,
            help="TOML file with the server's settings (docs/deploy.md); flags override it",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, Opt("--data-dir", help="Where the server keeps its state")
    ] = None,
    host: Annotated[str | None, Opt(help="Address to listen on (default {default})")] = None,
    port: Annotated[int | None, Opt(help="Port to listen on (default {default})")] = None,
    database_url: Annotated[
        str | None,
        Opt(
            "--database-url",
            envvar="JOBFLEET_DATABASE_URL",
            help="postgresql+asyncpg://… (default: SQLite in the data dir)",
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        Opt(
            "--redis-url",
            envvar="JOBFLEET_REDIS_URL",
            help="redis://… : run as one node of a cluster (with a PostgreSQL --database-url)",
        ),
    ] = None,
    agent_lost_grace: Annotated[
        float | None,
        Opt(
            help="Seconds a disconnected agent has to come back before its tasks end with 310 "
            "(default {default})"
        ),
    ] = None,
    recovery_window: Annotated[
        float | None,
        Opt(
            help="After a restart, seconds to wait for agents to reconnect before giving up on "
            "their tasks (default {default})"
        ),
    ] = None,
    max_output_bytes: Annotated[
        int | None,
        Opt(
            "--max-output-bytes",
            help="Bytes of output stored per host task; past it the log ends with a truncation "
            "line (default {default:size})",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, Opt("--tls-cert", help="PEM certificate: serve HTTPS and WSS")
    ] = None,
    tls_key: Annotated[Path | None, Opt("--tls-key", help="PEM private key")] = None,
    agent_port: Annotated[
        int | None,
        Opt(
            "--agent-port",
            help="Port agents connect to over TLS with the server's own CA "
            "(default {default}; 0: any free port)",
        ),
    ] = None,
    agent_plaintext: Annotated[
        bool,
        Opt(
            "--agent-plaintext",
            help="Let agents talk plain HTTP on the API port instead of the encrypted "
            "agent port (unsafe outside a trusted network)",
        ),
    ] = False,
    bootstrap_token_ttl: Annotated[
        str | None,
        Opt(
            "--bootstrap-token-ttl",
            help="Lifetime of the enrollment token written to bootstrap.json on the first "
            "start (e.g. 30m, 24h, 7d; default {default:duration})",
        ),
    ] = None,
    log_level: Annotated[
        str | None, Opt(help="debug, info, warning or error (default {default})")
    ] = None,
    log_format: Annotated[
        str | None,
        Opt(
            "--log-format",
            envvar="JOBFLEET_LOG_FORMAT",
            help="text (key=value) or json (one object per line); uvicorn's lines too",
        ),
    ] = None,
    heartbeat: Annotated[
        float | None,
        Opt(
            help="An agent connection silent this many seconds is pinged, and cut when "
            "silent for as long again (default {default}; agents ping the server every 10 s "
            "themselves)"
        ),
    ] = None,
    max_file_size: Annotated[
        int | None,
        Opt(
            "--max-file-size",
            help="Largest uploaded or transferred file in bytes (default {default:size})",
        ),
    ] = None,
    retain_jobs: Annotated[
        str | None,
        Opt(
            "--retain-jobs",
            envvar="JOBFLEET_RETAIN_JOBS",
            help="Keep finished jobs (steps, hosts, logs, file logs, variables) and GSE process "
            "operations this long "
            "(e.g. 12h, 30d; default {default:duration}; 0 = forever)",
        ),
    ] = None,
    retain_audit: Annotated[
        str | None,
        Opt(
            "--retain-audit",
            envvar="JOBFLEET_RETAIN_AUDIT",
            help="Keep audit entries this long (default {default:duration})",
        ),
    ] = None,
    retain_blobs: Annotated[
        str | None,
        Opt(
            "--retain-blobs",
            envvar="JOBFLEET_RETAIN_BLOBS",
            help="Keep uploaded and transferred files this long (unless a plan, a template or "
            "a job not yet finished uses them; default {default:duration})",
        ),
    ] = None,
    retain_heal: Annotated[
        str | None,
        Opt(
            "--retain-heal",
            envvar="JOBFLEET_RETAIN_HEAL",
            help="Keep self-healing decisions this long (default {default:duration}; 0 = forever)",
        ),
    ] = None,
    cron_time_scale: Annotated[
        float | None,
        Opt(
            "--cron-time-scale",
            hidden=True,
            max=1000.0,
            help="Run cron schedules this many times faster than the wall clock (tests, demos)",
        ),
    ] = None,
    smtp_host: Annotated[
        str | None,
        Opt("--smtp-host", envvar="JOBFLEET_SMTP_HOST", help="Mail server of email notifications"),
    ] = None,
    smtp_port: Annotated[
        int | None,
        Opt(
            "--smtp-port",
            envvar="JOBFLEET_SMTP_PORT",
            help="Mail server port (default {default})",
        ),
    ] = None,
    smtp_from: Annotated[
        str | None, Opt("--smtp-from", envvar="JOBFLEET_SMTP_FROM", help="Sender address")
    ] = None,
    smtp_starttls: Annotated[
        bool, Opt("--smtp-starttls", help="Upgrade the mail connection with STARTTLS")
    ] = False,
    smtp_user: Annotated[
        str | None, Opt("--smtp-user", envvar="JOBFLEET_SMTP_USER", help="SMTP login")
    ] = None,
    smtp_password: Annotated[
        str | None,
        Opt(
            "--smtp-password",
            envvar="JOBFLEET_SMTP_PASSWORD",
            help="SMTP password (prefer the environment variable or smtp.password_file)",
            show_default=False,
        ),
    ] = None,
    metrics_token_file: Annotated[
        Path | None,
        Opt(
            "--metrics-token-file",
            dir_okay=False,
            help="File holding the bearer token /metrics asks for (default: none asked)",
        ),
    ] = None,
    callback_allow: Annotated[
        list[str] | None,
        Opt(
            "--callback-allow",
            help="A CIDR range callbacks and webhooks may reach although it is refused by "
            "default (loopback, link-local, this server's addresses); repeatable",
        ),
    ] = None,
    max_body: Annotated[
        int | None,
        Opt(help="Largest request body in bytes, except file uploads (default {default:size})"),
    ] = None,
    cookie_secure: Annotated[
        str | None,
        Opt(
            "--cookie-secure",
            help="When the console's session cookie is marked Secure: auto (when this "
            "server sees HTTPS; the default), always (behind a proxy that ends TLS), never",
        ),
    ] = None,
    header_timeout: Annotated[
        float | None,
        Opt(help="Seconds a client has to send its request headers (default {default})"),
    ] = None,
    body_timeout: Annotated[
        float | None,
        Opt(help="Seconds without a byte of a request body before it is cut (default {default})"),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        Opt(help="Seconds an idle keep-alive connection stays open (default {default})"),
    ] = None,
    max_pending_connections: Annotated[
        int | None,
        Opt(
            help="Connections still sending headers at once; past it the oldest is closed "
            "(default {default})"
        ),
    ] = None,
    max_api_requests: Annotated[
        int | None,
        Opt(
            help="API requests in flight at once (agents and probes not counted; 0: no cap; "
            "default {default})"
        ),
    ] = None,
    enroll_rate: Annotated[
        float | None,
        Opt(help="Enrollments per second per source address (0: no limit; default {default})"),
    ] = None,
    enroll_burst: Annotated[
        int | None, Opt(help="Enrollments at once per source address (default {default})")
    ] = None,
    auth_failure_rate: Annotated[
        float | None,
        Opt(
            help="Failed authentications per second per source address (0: no limit; "
            "default {default})"
        ),
    ] = None,
    auth_failure_burst: Annotated[
        int | None,
        Opt(help="Failed authentications at once per source address (default {default})"),
    ] = None,
    version: VersionOption = False,
) -> None:
    """Run a jobfleet server: HTTP API, agent gateway and job engine.

    Settings come from --config (a TOML file), then from the flags given here."""
    from jobfleet import logs, server_config
    from jobfleet.server import run

    given = {}
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name or "")
        if param.name in ("config", "version") or source is None or source.name == "DEFAULT":
            continue
        given[param.opts[0]] = ctx.params[param.name or ""]
    try:
        settings = server_config.load(config, given)
    except server_config.ConfigError as exc:
        typer.echo(f"jobfleet server: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.setup(settings.log_level, settings.log_format)
    run(settings)


def agent(ctx: typer.Context) -> None:
    """Run the agent of one host (options: jobfleet agent --help).

    The enrollment token is read from --enroll-token-file or JOBFLEET_ENROLL_TOKEN,
    never from the command line, where every user of the host could read it in ps."""
    # the agent's command line is its own (stdlib only), so a host runs it without this CLI
    from jobfleet.agent.main import main as agent_main

    raise typer.Exit(agent_main(ctx.args))


def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the server and agents running")
    ] = False,
    agents: Annotated[int, typer.Option(help="How many local agents to start")] = 5,
    port: Annotated[int, typer.Option(help="Port for the server (0 picks a free one)")] = 0,
) -> None:
    """Start a server and local agents, run a real job on them, show the results."""
    import asyncio

    from jobfleet.cli.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(keep=keep, agents=agents, port=port)))


def server_main(argv: list[str]) -> None:
    """``jobfleet server`` as a command of its own (see ``jobfleet.__main__``)."""
    app = typer.Typer(
        add_completion=False, context_settings={"help_option_names": ["-h", "--help"]}
    )
    app.command(cls=ServerCommand)(server)
    from jobfleet.cli._sigpipe import closed_pipe_ends_as_sigpipe

    with closed_pipe_ends_as_sigpipe():
        app(args=argv, prog_name="jobfleet server")


def register(app: typer.Typer) -> None:
    """Add the daemon commands to the ``jobfleet`` command."""
    app.command(cls=ServerCommand)(server)
    app.command(
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        }
    )(agent)
    app.command()(demo)
