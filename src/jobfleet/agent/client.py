"""The agent's public names, where the CLI, the swarm and tests have always found them.

The code lives by concern: :mod:`jobfleet.agent.settings`, :mod:`jobfleet.agent.enrollment`,
:mod:`jobfleet.agent.connection` and :mod:`jobfleet.agent.task`.
"""

from __future__ import annotations

from jobfleet.agent.connection import CONNECT_PATH, Agent
from jobfleet.agent.enrollment import Credential, enroll
from jobfleet.agent.settings import TOKEN_HELP, AgentSettings, parse_labels

__all__ = [
    "CONNECT_PATH",
    "TOKEN_HELP",
    "Agent",
    "AgentSettings",
    "Credential",
    "enroll",
    "parse_labels",
]
