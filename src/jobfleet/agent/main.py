"""``jobfleet agent``: the agent's command line, in stdlib only.

It is what ``python -m jobfleet agent``, ``jobfleet agent``, ``jobfleet-agent`` and
the single-file ``jobfleet-agent.pyz`` run, and it loads nothing of the server or
of the operator's CLI: an idle agent holds the standard library, ``websockets`` and
its own modules.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from copy import copy
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NoReturn

from jobfleet import logs
from jobfleet.agent.backoff import FLOOR
from jobfleet.agent.settings import TOKEN_HELP, AgentSettings, parse_labels

if TYPE_CHECKING:
    import argparse

    from jobfleet.agent.connection import Agent

log = logging.getLogger(__name__)

USAGE_ERROR = 2


DESCRIPTION = (
    "Run the agent of one host. The enrollment token is read from --enroll-token-file or "
    "JOBFLEET_ENROLL_TOKEN, never from the command line, where every user of the host "
    "could read it in ps."
)
# an option argparse lists in no help
HIDDEN = "hidden"
# a longer wait leaves a restarted server's hosts down for no reason
MAX_BACKOFF_LIMIT = 3600.0

# Every option: its name and what argparse is told about it. The same table reads a
# plain command line without argparse (:func:`plain_args`).
OPTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "--server",
        {
            "required": True,
            "action": "append",
            "help": "The server's URL; repeat it for each node of a cluster (the agent "
            "moves to another when its node goes away)",
        },
    ),
    (
        "--state-dir",
        {
            "required": True,
            "type": Path,
            "help": "Where the agent keeps its credential and unsent results",
        },
    ),
    ("--ip", {"required": True, "help": "This host's IP as jobfleet knows it"}),
    (
        "--enroll-token-file",
        {
            "type": Path,
            "help": "File holding the enrollment token for the first start "
            "(or set JOBFLEET_ENROLL_TOKEN)",
        },
    ),
    # refused: it would show in ps
    ("--enroll-token", {"help": HIDDEN}),
    ("--bk-cloud-id", {"type": int, "default": 0, "help": "Cloud area id (default 0)"}),
    ("--biz", {"type": int, "default": 2, "help": "Business the host joins (default 2)"}),
    ("--hostname", {"default": "", "help": "Host name to report (default: this machine's)"}),
    (
        "--ca-file",
        {
            "type": Path,
            "help": "CA bundle that signed the server's HTTPS certificate (default: the "
            "system's CAs)",
        },
    ),
    (
        "--log-level",
        {"default": "info", "help": "debug, info, warning or error (default info)"},
    ),
    (
        "--ipv6",
        {
            "default": "",
            "help": "This host's IPv6 address to report, or 'auto' to discover it "
            "(default: none, or --ip when that is IPv6)",
        },
    ),
    (
        "--peer-port",
        {
            "type": int,
            "default": None,
            "help": "Serve file pieces to the other targets of a transfer on this TCP port "
            "(peer-to-peer distribution, opt-in; 0 picks a free port). Without it every "
            "file comes from the server",
        },
    ),
    (
        "--peer-listen",
        {"default": "0.0.0.0", "help": "Address the peer port listens on (default: all)"},
    ),
    (
        "--peer-address",
        {
            "default": "",
            "help": "Address other agents dial for the peer port (default: the address "
            "this agent's connection to the server comes from)",
        },
    ),
    (
        "--label",
        {
            "action": "append",
            "default": [],
            "help": "A key=value label dynamic groups can select by; repeatable",
        },
    ),
    (
        "--max-backoff",
        {
            "type": float,
            "default": AgentSettings.max_backoff,
            "help": "Longest wait in seconds between two tries to reach the server "
            f"(default {AgentSettings.max_backoff:g}); keep it below the server's "
            "--recovery-window, so the agent is back before the server gives up on its tasks",
        },
    ),
]


def parser(prog: str = "jobfleet agent") -> argparse.ArgumentParser:
    """The full parser, with help and usage errors (imported only when needed)."""
    import argparse

    class HelpFormatter(argparse.HelpFormatter):
        """argparse's own, given the terminal's width as ``shutil`` would find it, so
        that argparse does not import ``shutil`` (with ``bz2`` and ``lzma``: 0.5 MiB)."""

        def __init__(self, prog: str) -> None:
            try:
                width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
            except (ValueError, OSError):
                width = 80
            super().__init__(prog, width=width - 2)

    p = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter, description=DESCRIPTION)
    for name, spec in OPTIONS:
        kwargs = dict(spec)
        if kwargs.get("help") == HIDDEN:
            kwargs["help"] = argparse.SUPPRESS
        p.add_argument(name, **kwargs)
    # answered before the others are read (``main``): listed here for the help only
    p.add_argument(
        "--version", action="store_true", default=argparse.SUPPRESS, help=VERSION_HELP
    )
    return p


VERSION_HELP = "Print the agent's release, protocol version and capabilities, and exit"


def version_line(prog: str) -> str:
    """What ``--version`` prints: the release, and what the agent speaks (the server
    serves agents by their protocol and capabilities, docs/deploy.md)."""
    from jobfleet import __version__

    if "jobfleet.domain.protocol" not in sys.modules:
        from jobfleet.domain.typeddict import without_validation

        without_validation()
    from jobfleet.domain import protocol

    return (
        f"{prog} {__version__} (protocol {protocol.PROTOCOL_VERSION}; "
        f"capabilities: {' '.join(protocol.AGENT_CAPS)})"
    )


def plain_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """The options of a command line argparse would read without a word to say: every
    option by its full name with its value (``--opt VALUE`` or ``--opt=VALUE``), every
    required one given. Read here without argparse, which an agent would otherwise
    hold for good (0.5 MiB); None for anything else (help, an unknown or abbreviated
    option, a missing or bad value, a missing required option): argparse then reads
    the command line and answers as ever."""
    specs = dict(OPTIONS)
    # argparse's defaults (a list default is a fresh copy)
    values: dict[str, Any] = {_dest(name): copy(spec.get("default")) for name, spec in OPTIONS}
    items = iter(argv)
    for item in items:
        name, attached, value = item.partition("=")
        spec = specs.get(name)
        if spec is None:
            return None
        if not attached:
            following = next(items, None)
            if following is None:
                return None
            value = following
        try:
            converted = spec.get("type", str)(value)
        except ValueError:
            return None
        dest = _dest(name)
        if spec.get("action") == "append":
            values[dest] = [*(values[dest] or []), converted]
        else:
            values[dest] = converted
    if any(spec.get("required") and values[_dest(name)] is None for name, spec in OPTIONS):
        return None
    return SimpleNamespace(**values)


def _dest(name: str) -> str:
    return name.lstrip("-").replace("-", "_")


def _values_attached(p: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--opt VALUE`` as ``--opt=VALUE``, so a value may start with a dash (``--label -x=1``
    is then refused by the label rule, not taken for an option)."""
    takes_value = {
        s for a in p._actions if a.nargs is None and a.option_strings for s in a.option_strings
    } - {"-h", "--help"}
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item in takes_value:
            value = next(items, None)
            out.append(item if value is None else f"{item}={value}")
        else:
            out.append(item)
    return out


def settings_from(
    args: argparse.Namespace | SimpleNamespace, fail: Callable[[str], NoReturn]
) -> AgentSettings:
    """The agent's settings from its options; a bad option ends the program (``fail``
    prints the usage and the message, status 2)."""
    if args.enroll_token is not None:
        fail(
            f"--enroll-token: the token would show in ps on a command line; give it with "
            f"{TOKEN_HELP}"
        )
    token = os.environ.get("JOBFLEET_ENROLL_TOKEN", "").strip() or None
    if args.enroll_token_file is not None:
        try:
            token = args.enroll_token_file.read_text().strip() or None
        except OSError as exc:
            fail(f"--enroll-token-file: cannot read {args.enroll_token_file}: {exc.strerror}")
    try:
        labels = parse_labels(args.label)
    except ValueError as exc:
        fail(f"--label: {exc}")
    if args.peer_port is not None and not 0 <= args.peer_port < 65536:
        fail(f"--peer-port: {args.peer_port} is not a TCP port")
    if not FLOOR <= args.max_backoff <= MAX_BACKOFF_LIMIT:
        fail(
            f"--max-backoff: {args.max_backoff:g} is not between {FLOOR:g} and "
            f"{MAX_BACKOFF_LIMIT:g} seconds"
        )
    ipv6 = args.ipv6
    if ipv6 not in ("", "auto"):
        try:
            ipv6 = str(ipaddress.IPv6Address(ipv6))
        except ValueError:
            fail(f"--ipv6: {ipv6!r} is not an IPv6 address")
    return AgentSettings(
        server=args.server[0],
        more_servers=args.server[1:],
        state_dir=args.state_dir,
        ip=args.ip,
        bk_cloud_id=args.bk_cloud_id,
        biz=args.biz,
        enroll_token=token,
        hostname=args.hostname,
        ca_file=args.ca_file,
        ipv6=ipv6,
        labels=labels,
        peer_port=args.peer_port,
        peer_listen=args.peer_listen,
        peer_address=args.peer_address,
        max_backoff=args.max_backoff,
    )


async def _serve(agent: Agent) -> None:
    """Run until SIGTERM (a service manager's stop) or SIGINT, then ``Agent.stop``:
    the agent kills the tasks running and reaps their processes itself. SIGTERM's
    default ends the process at once: the watchdog then kills the tasks, and their
    processes are left to whatever inherits them, zombies under an init that does
    not reap."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    asked: list[int] = []

    def stop(sig: int) -> None:
        # once: a second signal must not cut the stop short (it is bounded)
        if not asked:
            asked.append(sig)
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        await agent.run_forever()
    except asyncio.CancelledError:
        log.info("agent_stopping signal=%s", signal.Signals(asked[0]).name if asked else "")
    finally:
        await agent.stop()


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``argv`` without the program (None: this process's, as the ``jobfleet-agent`` script)."""
    prog = prog or ("jobfleet-agent" if argv is None else "jobfleet agent")
    words = sys.argv[1:] if argv is None else list(argv)
    if "--version" in words:
        print(version_line(prog))
        return 0
    args: argparse.Namespace | SimpleNamespace | None = plain_args(words)
    if args is None:
        p = parser(prog)
        args = p.parse_args(_values_attached(p, words))

    def fail(message: str) -> NoReturn:
        parser(prog).error(message)

    settings = settings_from(args, fail)
    logs.setup(args.log_level)
    # imported after the options are checked: a usage error costs no event loop
    from jobfleet.agent.lazy import defer_unused
    from jobfleet.domain.typeddict import without_validation

    defer_unused()
    without_validation()
    import ssl

    from jobfleet.agent.connection import Agent

    try:
        asyncio.run(_serve(Agent(settings)))
    except RuntimeError as exc:
        # logging is set up and has written lines already: the reason the agent ends is
        # a log line like them, with its time
        log.error("agent_not_started reason=%s", exc)
        return USAGE_ERROR
    except ssl.SSLError as exc:
        # only a first enrollment ends on it (later, connections are tried again): the
        # operator has a server to trust, not a bug to report
        log.error(
            "agent_not_started reason=the server's certificate did not verify: %s; a "
            "certificate of a private CA is trusted with --ca-file",
            exc,
        )
        return USAGE_ERROR
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
