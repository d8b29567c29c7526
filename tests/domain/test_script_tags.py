"""Tags on scripts: what a tag may be, and how a list of them is kept."""

from __future__ import annotations

import pytest

from jobfleet.domain.errors import JobError
from jobfleet.domain.script_tags import check_tag, check_tags, joined, split


def test_tags_are_trimmed_and_kept_once_in_order() -> None:
    assert check_tags([" ops", "backup ", "ops", "数据库"]) == ["ops", "backup", "数据库"]
    assert joined(["ops", "backup"]) == ",ops,backup," and joined([]) == ""
    assert split(",ops,backup,") == ["ops", "backup"] and split("") == [] and split(None) == []


@pytest.mark.parametrize("bad", ["", "  ", 5, None, "a,b", "x" * 33, "tab\there", "nul\x00"])
def test_a_bad_tag_is_refused(bad: object) -> None:
    with pytest.raises(JobError) as err:
        check_tags([bad])
    assert "tags" in err.value.message
    with pytest.raises(JobError):
        check_tag(bad)


def test_a_list_of_at_most_ten() -> None:
    assert len(check_tags([f"t{i}" for i in range(10)])) == 10
    with pytest.raises(JobError):
        check_tags([f"t{i}" for i in range(11)])
    with pytest.raises(JobError):
        check_tags("ops")
