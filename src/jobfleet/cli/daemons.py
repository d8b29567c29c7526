"""The long-running commands: ``server``, ``agent`` and ``demo``."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from jobfleet import logs


def server(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the server keeps its state")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="JOBFLEET_DATABASE_URL",
            help="postgresql+asyncpg://… (default: SQLite in the data dir)",
        ),
    ] = None,
    agent_lost_grace: Annotated[
        float,
        typer.Option(
            help="Seconds a disconnected agent has to come back before its tasks end with 310"
        ),
    ] = 10.0,
    recovery_window: Annotated[
        float,
        typer.Option(
            help="After a restart, seconds to wait for agents to reconnect before giving up on "
            "their tasks"
        ),
    ] = 30.0,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS and WSS")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key")] = None,
    agent_port: Annotated[
        int,
        typer.Option(
            "--agent-port",
            min=0,
            max=65535,
            help="Port agents connect to over TLS with the server's own CA (0: any free port)",
        ),
    ] = 8443,
    agent_plaintext: Annotated[
        bool,
        typer.Option(
            "--agent-plaintext",
            help="Let agents talk plain HTTP on the API port instead of the encrypted "
            "agent port (unsafe outside a trusted network)",
        ),
    ] = False,
    bootstrap_lifetime: Annotated[
        str,
        typer.Option(
            "--bootstrap-token-ttl",
            help="Lifetime of the enrollment token written to bootstrap.json on the first "
            "start (e.g. 30m, 24h, 7d)",
        ),
    ] = "24h",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    cron_time_scale: Annotated[
        float,
        typer.Option(
            "--cron-time-scale",
            hidden=True,
            min=1.0,
            max=1000.0,
            help="Run cron schedules this many times faster than the wall clock (tests, demos)",
        ),
    ] = 1.0,
    smtp_host: Annotated[
        str | None,
        typer.Option(
            "--smtp-host", envvar="JOBFLEET_SMTP_HOST", help="Mail server of email notifications"
        ),
    ] = None,
    smtp_port: Annotated[int, typer.Option("--smtp-port", envvar="JOBFLEET_SMTP_PORT")] = 25,
    smtp_from: Annotated[
        str, typer.Option("--smtp-from", envvar="JOBFLEET_SMTP_FROM", help="Sender address")
    ] = "jobfleet@localhost",
    smtp_starttls: Annotated[
        bool, typer.Option("--smtp-starttls", help="Upgrade the mail connection with STARTTLS")
    ] = False,
    smtp_user: Annotated[
        str | None, typer.Option("--smtp-user", envvar="JOBFLEET_SMTP_USER", help="SMTP login")
    ] = None,
    smtp_password: Annotated[
        str | None,
        typer.Option(
            "--smtp-password",
            envvar="JOBFLEET_SMTP_PASSWORD",
            help="SMTP password (prefer the environment variable)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a jobfleet server: HTTP API, agent gateway and job engine."""
    from jobfleet.cli._durations import parse_ttl
    from jobfleet.engine.notify import SmtpSettings
    from jobfleet.server import ServerSettings, run

    try:
        token_ttl = parse_ttl(bootstrap_lifetime)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--bootstrap-token-ttl") from None
    logs.setup(log_level)
    run(
        ServerSettings(
            data_dir=data_dir,
            host=host,
            port=port,
            database_url=database_url,
            engine={
                "agent_lost_grace": agent_lost_grace,
                "recovery_window": recovery_window,
                "cron_time_scale": cron_time_scale,
            },
            log_level=log_level,
            tls_cert=tls_cert,
            tls_key=tls_key,
            agent_port=agent_port,
            agent_plaintext=agent_plaintext,
            bootstrap_token_ttl=token_ttl,
            smtp=SmtpSettings(
                host=smtp_host,
                port=smtp_port,
                sender=smtp_from,
                starttls=smtp_starttls,
                username=smtp_user,
                password=smtp_password,
            )
            if smtp_host
            else None,
        )
    )


def agent(
    server_url: Annotated[str, typer.Option("--server", help="The server's URL")],
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", help="Where the agent keeps its credential and unsent results"),
    ],
    ip: Annotated[str, typer.Option("--ip", help="This host's IP as jobfleet knows it")],
    enroll_token_file: Annotated[
        Path | None,
        typer.Option(
            "--enroll-token-file",
            help="File holding the enrollment token for the first start "
            "(or set JOBFLEET_ENROLL_TOKEN)",
        ),
    ] = None,
    enroll_token_argv: Annotated[
        str | None,
        typer.Option("--enroll-token", hidden=True, help="Refused: it would show in ps"),
    ] = None,
    bk_cloud_id: Annotated[int, typer.Option("--bk-cloud-id", help="Cloud area id")] = 0,
    biz: Annotated[int, typer.Option("--biz", help="Business the host joins")] = 2,
    hostname: Annotated[str, typer.Option(help="Host name to report")] = "",
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="CA bundle that signed the server's certificate"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    ipv6: Annotated[
        str,
        typer.Option(
            "--ipv6",
            help="This host's IPv6 address to report, or 'auto' to discover it "
            "(default: none, or --ip when that is IPv6)",
        ),
    ] = "",
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="A key=value label dynamic groups can select by; repeatable"),
    ] = None,
) -> None:
    """Run the agent of one host.

    The enrollment token is read from --enroll-token-file or JOBFLEET_ENROLL_TOKEN,
    never from the command line, where every user of the host could read it in ps."""
    from jobfleet.agent.client import TOKEN_HELP, Agent, AgentSettings, parse_labels

    if enroll_token_argv is not None:
        raise typer.BadParameter(
            f"the token would show in ps on a command line; give it with {TOKEN_HELP}",
            param_hint="--enroll-token",
        )
    enroll_token = os.environ.get("JOBFLEET_ENROLL_TOKEN", "").strip() or None
    if enroll_token_file is not None:
        try:
            enroll_token = enroll_token_file.read_text().strip() or None
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {enroll_token_file}: {exc.strerror}",
                param_hint="--enroll-token-file",
            ) from None

    try:
        labels = parse_labels(label or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--label") from None
    if ipv6 not in ("", "auto"):
        try:
            ipv6 = str(ipaddress.IPv6Address(ipv6))
        except ValueError:
            raise typer.BadParameter(
                f"{ipv6!r} is not an IPv6 address", param_hint="--ipv6"
            ) from None
    logs.setup(log_level)
    settings = AgentSettings(
        server=server_url,
        state_dir=state_dir,
        ip=ip,
        bk_cloud_id=bk_cloud_id,
        biz=biz,
        enroll_token=enroll_token,
        hostname=hostname,
        ca_file=ca_file,
        ipv6=ipv6,
        labels=labels,
    )
    try:
        asyncio.run(Agent(settings).run_forever())
    except RuntimeError as exc:
        typer.echo(f"jobfleet agent: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the server and agents running")
    ] = False,
    agents: Annotated[int, typer.Option(help="How many local agents to start")] = 5,
    port: Annotated[int, typer.Option(help="Port for the server (0 picks a free one)")] = 0,
) -> None:
    """Start a server and local agents, run a real job on them, show the results."""
    from jobfleet.cli.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(keep=keep, agents=agents, port=port)))


def register(app: typer.Typer) -> None:
    """Add the daemon commands to the ``jobfleet`` command."""
    app.command()(server)
    app.command()(agent)
    app.command()(demo)
