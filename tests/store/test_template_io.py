"""TemplateImporter on a real database: create, refuse a second copy, update in place."""

from __future__ import annotations

import pytest
from tests.store.test_templates import PASSWORD, script_step, variables

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.template_files import PlanDocument, TemplateDocument
from jobfleet.store.accounts import AccountStore
from jobfleet.store.database import Database
from jobfleet.store.plans import PlanStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.template_io import ImportedPlan, TemplateImporter
from jobfleet.store.templates import TemplateStore


def document(*steps: str, plans: list[PlanDocument] | None = None) -> TemplateDocument:
    return TemplateDocument(
        name="deploy", description="d", steps=[script_step(s) for s in steps],
        variables=variables(), plans=plans or [])


async def test_import_creates_then_updates_matching_by_name(db: Database, cipher: Cipher) -> None:
    await AccountStore(db).create(2, "root")
    templates, plans = TemplateStore(db, cipher), PlanStore(db, cipher)
    importer = TemplateImporter(templates, plans)
    first = await importer.import_template(
        2, document("one", "two", plans=[PlanDocument("p", "", ["two"], [])]),
        update_existing=False, user="alice")
    assert first.created and first.plans == [ImportedPlan(first.plans[0].id, "p", True)]
    plan = await plans.get_plan([2], first.plans[0].id)
    assert [s["enabled"] for s in plans.steps(plan)] == [False, True]
    with pytest.raises(JobError) as err:
        await importer.import_template(2, document("one"), update_existing=False, user="bob")
    assert err.value.code == ErrorCode.CONFLICT and "update=true" in str(err.value.message)
    # steps keep their ids by name; the plan of the same name is re-made, keeping its password
    again = await importer.import_template(
        2, document("two", "three", plans=[PlanDocument("p", "", None, [])]),
        update_existing=True, user="bob")
    assert (again.template_id, again.created) == (first.template_id, False)
    assert again.plans == [ImportedPlan(first.plans[0].id, "p", False)]
    tpl = await templates.get_template([2], again.template_id)
    assert [(s["id"], s["name"]) for s in templates.steps(tpl)] == [(2, "two"), (3, "three")]
    plan = await plans.get_plan([2], first.plans[0].id)
    assert not plan.need_update
    assert {v.name: v.value for v in plans.variables(plan)}["secret"] == PASSWORD
    with pytest.raises(JobError) as err:
        await importer.import_template(
            2, document("one", plans=[PlanDocument("p", "", ["nope"], [])]),
            update_existing=True, user="bob")
    assert "no step named 'nope'" in str(err.value.message)
