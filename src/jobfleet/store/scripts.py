"""Business and public scripts with their versions."""

from __future__ import annotations

from jobfleet.store.database import Database


class ScriptStore:
    def __init__(self, db: Database) -> None:
        self.db = db
