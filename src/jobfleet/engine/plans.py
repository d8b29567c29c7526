"""Launching execution plans: a plan's steps and variables turned into a job."""

from __future__ import annotations

from jobfleet.engine.core import Engine
from jobfleet.engine.submit import Submitter
from jobfleet.store.database import Database
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.templates import TemplateStore


class PlanLauncher:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        submitter: Submitter,
        scripts: ScriptStore,
        templates: TemplateStore,
        cipher: Cipher,
    ) -> None:
        self.db = db
        self.engine = engine
        self.submitter = submitter
        self.scripts = scripts
        self.templates = templates
        self.cipher = cipher
