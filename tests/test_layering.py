"""Every import between jobfleet's packages is an arrow design.md's package table allows.

The table, as code:

| package   | may import                                                          |
| --------- | ------------------------------------------------------------------- |
| domain    | nothing of jobfleet                                                 |
| store     | domain                                                              |
| bus       | domain                                                              |
| gateway   | domain, store, bus                                                  |
| engine    | domain, store; gateway and bus only in ``engine/ports.py``          |
| api       | domain, store, engine                                               |
| web       | api, domain                                                         |
| agent     | domain (the protocol types only)                                    |
| sdk       | domain                                                              |
| cli       | sdk (public names only); ``server``/``agent``/``demo`` commands     |
|           | their packages                                                      |

``server.py`` is the composition root (it may import every package; only the CLI's
``server`` and ``demo`` commands import it), with two companions: ``server_config``
(the configuration file and flags into typed settings; the ``server`` command imports
it) and ``monitoring`` (what /readyz and /metrics report, from the node's parts).
``__main__`` runs the CLI. ``logs.py``,
``loop.py`` and ``durable.py`` are helpers every process shares; they import nothing of
jobfleet.
``jobfleet`` itself holds only ``__version__``. No package but ``store/`` imports
``store.tables``.

``KNOWN`` lists the arrows that exist today but the table does not allow; the list only
shrinks. A new arrow fails here: change the design (and design.md) or the code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "jobfleet"

# package -> packages it may import (besides itself and the shared helpers)
ALLOWED: dict[str, frozenset[str]] = {
    "domain": frozenset(),
    "store": frozenset({"domain"}),
    "bus": frozenset({"domain"}),
    "gateway": frozenset({"domain", "store", "bus"}),
    "engine": frozenset({"domain", "store"}),
    "api": frozenset({"domain", "store", "engine"}),
    "web": frozenset({"api", "domain"}),
    "agent": frozenset({"domain"}),
    "sdk": frozenset({"domain"}),
    "cli": frozenset({"sdk"}),
    "server": frozenset(
        {"domain", "store", "bus", "gateway", "engine", "api", "web", "agent", "sdk",
         "monitoring", "assembly", "bootstrap"}
    ),
    "server_config": frozenset({"domain", "engine", "server"}),
    # the composition root's parts: the engine built from its parts, and the first start
    "assembly": frozenset({"domain", "store", "bus", "gateway", "engine"}),
    "bootstrap": frozenset({"domain", "store"}),
    "monitoring": frozenset({"domain", "store", "bus", "gateway", "engine", "api"}),
    # ``python -m jobfleet agent`` goes straight to the agent's own command line, so
    # that a host loads none of the CLI's packages
    "__main__": frozenset({"cli", "agent"}),
    "logs": frozenset(),
    "loop": frozenset(),
    "durable": frozenset(),
}
# importable from anywhere: the version, and what every process shares
SHARED = frozenset({"jobfleet", "jobfleet.logs", "jobfleet.loop", "jobfleet.durable"})
# the one module of engine that may name gateway and bus: the interfaces engine needs
ENGINE_PORTS = "jobfleet.engine.ports"
# the agent takes from domain the protocol types only (and which TypedDict they are made
# with: an agent, which never validates them, tells ``typeddict`` so before they load)
AGENT_DOMAIN = frozenset({"jobfleet.domain.protocol", "jobfleet.domain.typeddict"})
# CLI commands that start a process import that process's package
CLI_COMMANDS: dict[str, frozenset[str]] = {
    "jobfleet.cli.daemons": frozenset({"server", "server_config", "agent"}),
    "jobfleet.cli.demo": frozenset({"server", "agent"}),
}

# (importing package or module, imported module): arrows the table does not allow yet
KNOWN: frozenset[tuple[str, str]] = frozenset(
    {
        # status codes and enrollment tokens: the agent protocol's types are to hold them
        ("jobfleet.agent", "jobfleet.domain.status"),
        ("jobfleet.agent", "jobfleet.domain.enrollment"),
    }
)


@dataclass(frozen=True)
class Arrow:
    source: str  # the importing module, dotted
    target: str  # the imported module (or module.name for ``from module import name``)
    names: tuple[str, ...]
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str) -> bool:
    base = SRC.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[Arrow]:
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    arrows = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            arrows += [Arrow(source, a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names = tuple(a.name for a in node.names)
            # ``from jobfleet import logs`` imports the module jobfleet.logs
            for name in names:
                full = f"{module}.{name}"
                target = full if is_module(full) else module
                arrows.append(Arrow(source, target, (name,), node.lineno))
    return [a for a in arrows if a.target == "jobfleet" or a.target.startswith("jobfleet.")]


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def known(arrow: Arrow) -> bool:
    return any(
        (arrow.source == src or arrow.source.startswith(src + "."))
        and (arrow.target == dst or arrow.target.startswith(dst + "."))
        for src, dst in KNOWN
    )


def refusal(arrow: Arrow) -> str | None:
    """Why the table does not allow ``arrow``; None if it does."""
    src, dst = package_of(arrow.source), package_of(arrow.target)
    if arrow.target in SHARED or src == dst:
        return None
    if src not in ALLOWED:
        return f"{src!r} is not in the package table"
    if src == "cli":
        if dst == "sdk":
            private = [n for n in arrow.names if n.startswith("_")]
            if arrow.target != "jobfleet.sdk" or private:
                return "the CLI imports the SDK's public names only (from jobfleet.sdk)"
            return None
        if dst in CLI_COMMANDS.get(arrow.source, frozenset()):
            return None
        return "the CLI imports only the SDK (and a command its process's package)"
    if src == "engine" and dst in ("gateway", "bus"):
        return None if arrow.source == ENGINE_PORTS else "engine reaches gateway/bus via ports"
    if arrow.target == "jobfleet.store.tables" and src != "store":
        return "only store/ imports store.tables"
    if src == "agent" and dst == "domain" and arrow.target not in AGENT_DOMAIN:
        return "the agent takes from domain the protocol types only"
    if dst not in ALLOWED[src]:
        return f"{src} may not import {dst}"
    return None


def all_arrows() -> list[Arrow]:
    return [a for path in sorted(ROOT.rglob("*.py")) for a in imports_of(path)]


def test_every_arrow_is_one_the_design_allows() -> None:
    bad = [f"{a}: {why}" for a in all_arrows() if (why := refusal(a)) and not known(a)]
    assert not bad, "\n".join(bad)


def test_known_exceptions_still_exist() -> None:
    """An exception that was fixed leaves the list, so it cannot come back unnoticed."""
    used = {
        (src, dst)
        for a in all_arrows()
        if refusal(a)
        for src, dst in KNOWN
        if (a.source == src or a.source.startswith(src + "."))
        and (a.target == dst or a.target.startswith(dst + "."))
    }
    assert used == KNOWN, f"no longer needed: {sorted(KNOWN - used)}"


@pytest.mark.parametrize(
    ("source", "target", "names", "allowed"),
    [
        ("jobfleet.api.files", "jobfleet.gateway.endpoint", ("x",), False),
        ("jobfleet.api.files", "jobfleet.engine.submit", ("x",), True),
        ("jobfleet.cli.topo", "jobfleet.domain.host_filters", ("x",), False),
        ("jobfleet.cli.topo", "jobfleet.sdk", ("JobClient",), True),
        ("jobfleet.cli.main", "jobfleet.sdk", ("_flow",), False),
        ("jobfleet.cli.main", "jobfleet.sdk._flow", ("parse_host",), False),
        ("jobfleet.cli.daemons", "jobfleet.engine.notify", ("x",), False),
        ("jobfleet.cli.daemons", "jobfleet.server", ("run",), True),
        ("jobfleet.cli.main", "jobfleet.server", ("run",), False),
        ("jobfleet.engine.core", "jobfleet.gateway.registry", ("x",), False),
        ("jobfleet.engine.ports", "jobfleet.gateway.registry", ("x",), True),
        ("jobfleet.store.jobs", "jobfleet.engine.core", ("x",), False),
        ("jobfleet.engine.submit", "jobfleet.store.tables", ("jobs",), False),
        ("jobfleet.store.jobs", "jobfleet.store.tables", ("jobs",), True),
        ("jobfleet.domain.states", "jobfleet.store.tables", ("x",), False),
        ("jobfleet.web.pages", "jobfleet.api.envelope", ("x",), True),
        ("jobfleet.web.pages", "jobfleet.store.jobs", ("x",), False),
        ("jobfleet.gateway.endpoint", "jobfleet.bus.redis", ("x",), True),
        ("jobfleet.agent.task", "jobfleet.domain.protocol", ("x",), True),
        ("jobfleet.agent.task", "jobfleet.domain.targets", ("x",), False),
        ("jobfleet.sdk._flow", "jobfleet.api.routing", ("x",), False),
        ("jobfleet.server", "jobfleet.api.app", ("x",), True),
        ("jobfleet.api.app", "jobfleet.server", ("x",), False),
        ("jobfleet.api.app", "jobfleet", ("__version__",), True),
    ],
)
def test_the_table(source: str, target: str, names: tuple[str, ...], allowed: bool) -> None:
    assert (refusal(Arrow(source, target, names, 1)) is None) is allowed
