"""Which ``TypedDict`` the protocol's message types are made with.

pydantic, which validates what agents send (the gateway), reads TypedDicts of
``typing_extensions`` only before Python 3.12. An agent never validates them: it
builds messages and reads the server's as their types, and ``typing.TypedDict``
does all of that. Importing ``typing_extensions`` only for its ``TypedDict`` costs
an idle agent 0.7 MiB, so the agent's command line calls :func:`without_validation`
before the protocol is imported; every other process gets the validator's kind.
"""

from __future__ import annotations

import sys
from typing import Any

_validated = True


def without_validation() -> None:
    """This process never validates protocol messages with pydantic (an agent)."""
    global _validated
    _validated = False


def base() -> Any:
    if sys.version_info >= (3, 12) or not _validated:
        from typing import TypedDict
    else:
        from typing_extensions import TypedDict
    return TypedDict
