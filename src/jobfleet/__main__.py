"""``python -m jobfleet``; ``agent`` goes straight to the agent's own command line, so
an agent never loads the operator's CLI (typer, rich) or anything of the server."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["agent"]:
        from jobfleet.agent.main import main as agent

        sys.exit(agent(sys.argv[2:]))
    from jobfleet.cli.main import main as cli

    cli()


if __name__ == "__main__":
    main()
