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
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="JOBFLEET_REDIS_URL",
            help="redis://… : run as a node of a cluster (with a shared PostgreSQL)",
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
    max_output_bytes: Annotated[
        int,
        typer.Option(
            "--max-output-bytes",
            min=1024,
            help="Output stored per host task; past it the log ends with a truncation line",
        ),
    ] = 16 * 1024 * 1024,
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
    retain_jobs: Annotated[
        str,
        typer.Option(
            "--retain-jobs",
            envvar="JOBFLEET_RETAIN_JOBS",
            help="Keep finished jobs (steps, hosts, logs, file logs, variables) this long "
            "(90d, 12h, 0 = forever)",
        ),
    ] = "90d",
    retain_audit: Annotated[
        str,
        typer.Option(
            "--retain-audit", envvar="JOBFLEET_RETAIN_AUDIT", help="Keep audit entries this long"
        ),
    ] = "365d",
    retain_blobs: Annotated[
        str,
        typer.Option(
            "--retain-blobs",
            envvar="JOBFLEET_RETAIN_BLOBS",
            help="Keep uploaded and transferred files this long (unless a plan or a running "
            "job uses them)",
        ),
    ] = "30d",
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
    callback_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--callback-allow",
            help="A CIDR range callbacks and webhooks may reach although it is refused by "
            "default (loopback, link-local, this server's addresses); repeatable",
        ),
    ] = None,
    max_body: Annotated[
        int,
        typer.Option(help="Largest request body in bytes, except file uploads", min=1024),
    ] = 32 * 1024 * 1024,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send its request headers", min=0.1)
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(help="Seconds without a byte of a request body before it is cut", min=0.1),
    ] = 30.0,
    idle_timeout: Annotated[
        float, typer.Option(help="Seconds an idle keep-alive connection stays open", min=1.0)
    ] = 15.0,
    max_pending_connections: Annotated[
        int,
        typer.Option(
            help="Connections still sending headers at once; past it the oldest is closed", min=1
        ),
    ] = 1000,
    max_api_requests: Annotated[
        int,
        typer.Option(
            help="API requests in flight at once (agents and /healthz not counted; 0: no cap)",
            min=0,
        ),
    ] = 512,
    enroll_rate: Annotated[
        float,
        typer.Option(help="Enrollments per second per source address (0: no limit)", min=0),
    ] = 20.0,
    enroll_burst: Annotated[
        int, typer.Option(help="Enrollments at once per source address", min=1)
    ] = 200,
    auth_failure_rate: Annotated[
        float,
        typer.Option(
            help="Failed authentications per second per source address (0: no limit)", min=0
        ),
    ] = 1.0,
    auth_failure_burst: Annotated[
        int, typer.Option(help="Failed authentications at once per source address", min=1)
    ] = 50,
) -> None:
    """Run a jobfleet server: HTTP API, agent gateway and job engine."""
    from jobfleet.cli._durations import parse_ttl
    from jobfleet.domain.addresses import parse_networks
    from jobfleet.engine.notify import SmtpSettings
    from jobfleet.engine.retention import RetentionSettings
    from jobfleet.server import EngineSettings, ServerSettings, run

    try:
        parse_networks(callback_allow or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--callback-allow") from None
    try:
        token_ttl = parse_ttl(bootstrap_lifetime)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--bootstrap-token-ttl") from None
    logs.setup(log_level)
    try:
        retention = RetentionSettings(
            jobs=parse_ttl(retain_jobs, zero=True),
            audit=parse_ttl(retain_audit, zero=True),
            blobs=parse_ttl(retain_blobs, zero=True),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run(
        ServerSettings(
            retention=retention,
            data_dir=data_dir,
            host=host,
            port=port,
            database_url=database_url,
            redis_url=redis_url,
            engine=EngineSettings(
                agent_lost_grace=agent_lost_grace,
                recovery_window=recovery_window,
                max_output_bytes=max_output_bytes,
                cron_time_scale=cron_time_scale,
            ),
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
            callback_allow=list(callback_allow or []),
            max_body=max_body,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            idle_timeout=idle_timeout,
            max_pending_connections=max_pending_connections,
            max_api_requests=max_api_requests,
            enroll_rate=enroll_rate,
            enroll_burst=enroll_burst,
            auth_failure_rate=auth_failure_rate,
            auth_failure_burst=auth_failure_burst,
        )
    )


def agent(
    server_url: Annotated[
        list[str],
        typer.Option(
            "--server",
            help="The server's URL; repeat it for each node of a cluster (the agent moves "
            "to another when its node goes away)",
        ),
    ],
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
        server=server_url[0],
        more_servers=server_url[1:],
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
