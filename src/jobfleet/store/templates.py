"""Job templates and execution plans.

A template holds its steps and variable definitions as JSON (the shapes of
``jobfleet.domain.plans`` and ``jobfleet.domain.variables``); a plan holds a copy
of them taken at its last sync, with each step enabled or not and its own
variable values. Password values are encrypted in both.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select

from jobfleet.domain.status import VariableType
from jobfleet.domain.variables import Variable
from jobfleet.store.database import Database
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import job_plans, job_templates


def seal_variables(variables: list[Variable], cipher: Cipher) -> list[dict[str, Any]]:
    """Variables as stored: password values encrypted."""
    out = []
    for var in variables:
        raw = var.to_dict()
        if var.type == VariableType.PASSWORD and var.value:
            raw["value"] = cipher.encrypt(var.value)
        out.append(raw)
    return out


def open_variables(raw: list[dict[str, Any]] | None, cipher: Cipher) -> list[Variable]:
    out = []
    for item in raw or []:
        var = Variable.from_dict(item)
        if var.type == VariableType.PASSWORD and var.value:
            var.value = cipher.decrypt(var.value)
        out.append(var)
    return out


class TemplateStore:
    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.cipher = cipher

    async def template(self, template_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(select(job_templates).where(job_templates.c.id == template_id))
            ).first()

    async def plan(self, plan_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (await conn.execute(select(job_plans).where(job_plans.c.id == plan_id))).first()

    def variables(self, row: Row[Any]) -> list[Variable]:
        """A template's or plan's variables with password values in clear (never to show)."""
        return open_variables(row.variables, self.cipher)
