"""Structured logging for every jobfleet process."""

from __future__ import annotations

import logging


def setup(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
