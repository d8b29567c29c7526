"""Which variables a plan's steps use, as get_job_plan_detail says (``used``)."""

from __future__ import annotations

from collections.abc import Iterator

from jobfleet.api.job_plans import used_names


def test_a_name_is_used_as_dollar_name_or_in_braces() -> None:
    names = {"a", "ab", "b", "c", "d", "e"}
    texts = ["echo $ab ${b}", "$a_x ${c}d", "x$dd $e"]
    # $a_x is a variable a_x, $dd one called dd: neither is a nor d
    assert used_names(names, texts) == {"ab", "b", "c", "e"}
    assert used_names(set(), texts) == set()
    assert used_names({"a"}, []) == set()


def test_each_text_is_read_once_for_every_name_and_no_further_than_needed() -> None:
    # get_job_plan_detail searched every step's copy of a stored script once per
    # variable: 50 variables and 20 steps of a 16 MB script held the server 36 s
    read: list[str] = []

    def texts() -> Iterator[str]:
        for text in ("echo $one", "echo ${two}", "never read"):
            read.append(text)
            yield text

    assert used_names({"one", "two"}, texts()) == {"one", "two"}
    assert read == ["echo $one", "echo ${two}"]
