"""PlanStore on a real database: enabled steps, own values, need_update and sync."""

from __future__ import annotations

import asyncio

import pytest
from tests.store.test_templates import PASSWORD, make, script_step, variables

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.variables import MASK
from jobfleet.store.accounts import AccountStore
from jobfleet.store.crons import CronStore
from jobfleet.store.database import Database
from jobfleet.store.plans import PlanStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.templates import ListFilter, TemplateStore


@pytest.fixture
async def stores(db: Database, cipher: Cipher) -> tuple[TemplateStore, PlanStore]:
    await AccountStore(db).create(2, "root")
    return TemplateStore(db, cipher), PlanStore(db, cipher)


def values_of(plans: PlanStore, row: object) -> dict[str, str]:
    return {v.name: v.value for v in plans.variables(row)}  # type: ignore[arg-type]


async def test_a_plan_keeps_its_choices_across_a_sync(
    stores: tuple[TemplateStore, PlanStore],
) -> None:
    templates, plans = stores
    tid = await make(templates)
    pid = await plans.create_plan([2], tid, "nightly", [2], [{"name": "greeting",
                                                            "value": "hello"}], "alice")
    row = await plans.get_plan([2], pid)
    assert [s["enabled"] for s in plans.steps(row)] == [False, True]
    assert values_of(plans, row) == {"greeting": "hello", "secret": PASSWORD}
    assert not row.need_update
    # a password sent back as MASK keeps its value; other values change
    row = await plans.update_plan([2], pid, user="bob",
                                  values=[{"name": "secret", "value": MASK}])
    assert values_of(plans, row)["secret"] == PASSWORD
    # the template changes: the plan shows it needs an update until synced
    steps = [script_step("one"), script_step("two"), script_step("three")]
    await templates.update_template([2], tid, "deploy", "", steps, variables(), "bob")
    assert (await plans.get_plan([2], pid)).need_update
    row = await plans.sync_plan([2], pid, "bob")
    assert not row.need_update
    assert [(s["id"], s["enabled"]) for s in plans.steps(row)] == [(1, False), (2, True),
                                                                   (3, True)]
    assert values_of(plans, row)["greeting"] == "hello"
    exported_steps, _ = plans.exported_plan(row, await templates.get_template([2], tid))
    assert [s["enabled"] for s in exported_steps] == [False, True, True]


async def test_bad_choices_names_and_deletes(
    stores: tuple[TemplateStore, PlanStore], db: Database
) -> None:
    templates, plans = stores
    tid = await make(templates)
    for enabled, says in [([9], "no step with id 9"), ([], "at least one enabled step")]:
        with pytest.raises(JobError) as err:
            await plans.create_plan([2], tid, "p", enabled, None, "alice")
        assert says in str(err.value.message)
    pid = await plans.create_plan([2], tid, "p", None, None, "alice")
    other = await plans.create_plan([2], tid, "q", None, None, "alice")
    with pytest.raises(JobError) as err:
        await plans.update_plan([2], other, user="bob", name="p")
    assert err.value.code == ErrorCode.CONFLICT
    total, rows = await plans.list_plans([2], ListFilter(), template_id=tid)
    assert (total, [r.id for r in rows]) == (2, [pid, other])
    with pytest.raises(JobError) as err:
        await plans.list_plans([3], ListFilter(), template_id=tid)
    assert err.value.code == ErrorCode.TEMPLATE_NOT_EXIST
    with pytest.raises(JobError) as err:
        await plans.get_plan([3], pid)
    assert err.value.code == ErrorCode.JOB_PLAN_NOT_EXIST
    cron_id = await CronStore(db).create(
        {"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": "c", "plan_id": pid})
    with pytest.raises(JobError) as err:
        await plans.delete_plan([2], pid)
    assert err.value.code == ErrorCode.CONFLICT and f"cron {cron_id}" in str(err.value.message)
    assert (await plans.delete_plan([2], other)).id == other
    assert [r.id for r in await plans.plans_of(tid)] == [pid]


async def test_concurrent_plan_updates_keep_each_others_values(
    stores: tuple[TemplateStore, PlanStore],
) -> None:
    templates, plans = stores
    tid = await make(templates)
    pid = await plans.create_plan([2], tid, "nightly", None, None, "alice")
    await asyncio.gather(
        plans.update_plan([2], pid, user="bob", values=[{"name": "greeting", "value": "hey"}]),
        plans.update_plan([2], pid, user="eve", values=[{"name": "secret", "value": "new-pw"}]),
        plans.update_plan([2], pid, user="ann", enabled_step_ids=[2]),
    )
    row = await plans.get_plan([2], pid)
    assert values_of(plans, row) == {"greeting": "hey", "secret": "new-pw"}
    assert [s["enabled"] for s in plans.steps(row)] == [False, True]


async def test_a_plan_made_while_its_template_is_deleted_is_not_left_behind(
    stores: tuple[TemplateStore, PlanStore],
) -> None:
    # made from a template read before the delete took it away, a plan outlived its
    # template: hidden from every list, it could still be launched by its id
    templates, plans = stores
    for n in range(10):
        tid = await make(templates, f"deploy {n}")
        results = await asyncio.gather(
            templates.delete_template([2], tid, cascade=True),
            *(plans.create_plan([2], tid, f"p{i}", None, None, "alice") for i in range(3)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, JobError):
                raise result
        deleted = not isinstance(results[0], BaseException)
        made = [r for r in results[1:] if isinstance(r, int)]
        if deleted:
            assert await templates.template(tid) is None
            assert [await plans.plan(p) for p in made] == [None] * len(made)
        else:
            assert results[0].code == ErrorCode.CONFLICT  # a plan came first
