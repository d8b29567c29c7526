"""Line differences between two script versions, as the console shows them."""

from __future__ import annotations

from jobfleet.web.diffs import Row, side_by_side, unified

OLD = "#!/bin/bash\necho one\necho two\nexit 0\n"
NEW = "#!/bin/bash\necho one\necho TWO\necho three\nexit 0\n"


def test_side_by_side_pairs_changed_lines_and_numbers_both_sides() -> None:
    rows = side_by_side(OLD, NEW)
    assert rows[:2] == [Row("equal", 1, "#!/bin/bash", 1, "#!/bin/bash"),
                        Row("equal", 2, "echo one", 2, "echo one")]
    assert Row("replace", 3, "echo two", 3, "echo TWO") in rows
    assert Row("insert", None, "", 4, "echo three") in rows
    assert rows[-1] == Row("equal", 4, "exit 0", 5, "exit 0")


def test_a_removed_line_has_no_right_side() -> None:
    rows = side_by_side("a\nb\nc\n", "a\nc\n")
    assert Row("delete", 2, "b", None, "") in rows
    assert [r.kind for r in rows] == ["equal", "delete", "equal"]


def test_unified_marks_each_line() -> None:
    lines = unified(OLD, NEW, "1.0", "1.1")
    assert lines[0] == ("head", "--- 1.0") and lines[1] == ("head", "+++ 1.1")
    assert ("delete", "-echo two") in lines
    assert ("insert", "+echo TWO") in lines and ("insert", "+echo three") in lines
    assert any(kind == "hunk" for kind, _ in lines)


def test_same_text_has_no_changes_and_markup_stays_text() -> None:
    assert unified("x\n", "x\n", "a", "b") == []
    rows = side_by_side("<b>&</b>\n", "<i>\n")
    # the rows carry the text as it is; the templates escape it
    assert rows == [Row("replace", 1, "<b>&</b>", 1, "<i>")]
