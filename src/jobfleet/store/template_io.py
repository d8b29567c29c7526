"""Importing a template with its plans from a document (``domain/template_files.py``
reads and writes the YAML), in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import enable, parse_steps, synced, with_values
from jobfleet.domain.template_files import PlanDocument, TemplateDocument
from jobfleet.domain.templates import check_description, check_name
from jobfleet.domain.variables import parse_definitions
from jobfleet.store.plans import PlanStore
from jobfleet.store.templates import TemplateStore, template_row, writing


@dataclass
class ImportedPlan:
    id: int
    name: str
    created: bool


@dataclass
class ImportResult:
    template_id: int
    created: bool
    plans: list[ImportedPlan] = field(default_factory=list)


class TemplateImporter:
    def __init__(self, templates: TemplateStore, plans: PlanStore) -> None:
        self.templates = templates
        self.plans = plans

    async def import_template(
        self, bk_biz_id: int, doc: TemplateDocument, *, update_existing: bool, user: str
    ) -> ImportResult:
        """Create a template with its plans in one transaction, or with
        ``update_existing`` replace the template of the same name.

        On an update, steps and variables match the existing ones by name (so plans
        keep their choices), plans of the same name are re-made from the document
        keeping their stored passwords, and plans the document does not name are left
        as they are.
        """
        name, description = check_name(doc.name), check_description(doc.description)
        variables = parse_definitions(doc.variables)
        steps = parse_steps(doc.steps, variables)
        async with writing(self.templates.db) as conn:
            existing = await self.templates.by_name(conn, bk_biz_id, name)
            if existing is not None and not update_existing:
                raise JobError(
                    ErrorCode.CONFLICT,
                    f"A job template named {name!r} exists in business {bk_biz_id} "
                    f"(id {existing.id}); import with update=true to replace it",
                )
            if existing is None:
                template_id = await self.templates.insert(
                    conn, bk_biz_id, name, description, steps, variables, user
                )
            else:
                template_id = existing.id
                locked = await template_row(conn, [bk_biz_id], template_id, lock=True)
                await self.templates.write(conn, locked, name, description, steps, variables, user)
            tpl = await template_row(conn, [bk_biz_id], template_id)
            result = ImportResult(template_id, existing is None)
            for plan in doc.plans:
                result.plans.append(await self._import_plan(conn, tpl, plan, user))
            return result

    async def _import_plan(
        self, conn: AsyncConnection, tpl: Row[Any], spec: PlanDocument, user: str
    ) -> ImportedPlan:
        plan_name = check_name(spec.name, "plans.name")
        steps = self.templates.steps(tpl)
        ids_by_name = {s["name"]: s["id"] for s in steps}
        enabled = None
        if spec.enabled_steps is not None:
            missing = [n for n in spec.enabled_steps if n not in ids_by_name]
            if missing:
                raise JobError.invalid(
                    f"plans.{plan_name}.enabled_steps", f"no step named {missing[0]!r}"
                )
            enabled = {ids_by_name[n] for n in spec.enabled_steps}
        enable(steps, enabled)
        old = await self.plans.by_name(conn, tpl.id, plan_name)
        if old is None:
            variables = with_values(self.templates.variables(tpl), spec.variables)
            new_id = await self.plans.insert(
                conn, tpl, plan_name, spec.description, steps, variables, user
            )
            return ImportedPlan(new_id, plan_name, True)
        _, base = synced(old.steps, self.plans.variables(old), steps, self.templates.variables(tpl))
        await self.plans.resync(
            conn, old.id, tpl, spec.description, steps, with_values(base, spec.variables), user
        )
        return ImportedPlan(old.id, plan_name, False)
