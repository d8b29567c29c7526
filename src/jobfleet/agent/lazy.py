"""Standard modules an idle agent's libraries import but do not use, loaded on first use.

``websockets`` imports ``importlib.metadata`` in every process (its version module
reads the installed version only in a development checkout), and that brings
``email``, ``zipfile``, ``csv``, ``calendar`` and more: about 2.5 MiB of an idle
agent's memory for nothing. :func:`defer` puts a stand-in for such a module in
``sys.modules``: the ``import`` statement finds it at once, and the first name read
from it imports the real module, which replaces the stand-in and answers from then
on (also through references taken before).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# imported, not used, by websockets while an agent idles
DEFERRED = ("importlib.metadata",)


class Deferred(types.ModuleType):
    """Imports the module of its name when one of its names is first read."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr not in ("__path__", "__file__", "__all__"):
            # what the import system and introspection probe: not a use of the module
            raise AttributeError(attr)
        return getattr(load(self), attr)


def load(stand_in: Deferred) -> types.ModuleType:
    name = stand_in.__name__
    real = sys.modules.get(name)
    if real is None or real is stand_in:
        del sys.modules[name]
        real = importlib.import_module(name)
    return real


def defer(name: str) -> None:
    """Import ``name`` on the first use of one of its names; nothing if it is loaded."""
    if name in sys.modules:
        return
    sys.modules[name] = Deferred(name)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, sys.modules[name])


def defer_unused() -> None:
    for name in DEFERRED:
        defer(name)
