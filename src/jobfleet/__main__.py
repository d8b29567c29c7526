"""``python -m jobfleet``; ``agent`` goes straight to the agent's own command line, so
an agent never loads the operator's CLI (typer, rich) or anything of the server, and
``server`` to its one command, so a server never holds the rest of the CLI (its API
client, httpx, rich's renderers: ~8 MiB) for its whole life."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["agent"]:
        from jobfleet.agent.main import main as agent

        sys.exit(agent(sys.argv[2:]))
    if sys.argv[1:2] == ["server"]:
        from jobfleet.cli.daemons import server_main

        server_main(sys.argv[2:])
        return
    from jobfleet.cli.main import main as cli

    cli()


if __name__ == "__main__":
    main()
