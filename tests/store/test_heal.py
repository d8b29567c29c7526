"""Self-healing rules: a name taken in the business is a conflict of the caller's; any
other constraint a write breaks is a fault, not told as a name taken."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.database import Database
from jobfleet.store.heal import HealStore
from jobfleet.store.secrets import Cipher


async def _rule(heal: HealStore, name: str) -> int:
    row = await heal.create_rule(2, secret="s", user="alice", app_code="app", name=name,
                                 match={}, job_plan_id=1, variables={})
    return int(row.id)


async def test_only_the_names_unique_key_is_a_name_taken(db: Database, cipher: Cipher) -> None:
    heal = HealStore(db, cipher)
    first = await _rule(heal, "restart")
    second = await _rule(heal, "drain")
    with pytest.raises(JobError) as taken:
        await heal.update_rule(2, second, user="bob", name="restart")
    assert taken.value.code == ErrorCode.CONFLICT and "'restart' exists" in taken.value.message
    with pytest.raises(JobError) as taken:
        await _rule(heal, "restart")
    assert taken.value.code == ErrorCode.CONFLICT
    # a column left empty breaks NOT NULL: not a name taken, but what it is
    with pytest.raises(IntegrityError):
        await heal.update_rule(2, first, user="bob", host_label=None)
    with pytest.raises(IntegrityError):
        await heal.create_rule(2, secret="s", user="alice", app_code="app", name="other",
                               match={}, job_plan_id=None, variables={})
    assert (await heal.rule(2, first)).host_label == "instance"
