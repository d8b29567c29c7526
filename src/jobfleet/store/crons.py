"""Cron jobs: schedules that launch execution plans."""

from __future__ import annotations

from jobfleet.store.database import Database


class CronStore:
    def __init__(self, db: Database) -> None:
        self.db = db
