"""Error messages in the caller's language."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.messages import is_chinese, localize
from jobfleet.domain.messages_zh import MESSAGES_ZH


@pytest.mark.parametrize(("value", "chinese"), [
    ("zh-cn", True), ("zh-CN,zh;q=0.9,en;q=0.8", True), ("zh_Hans", True), ("zh", True),
    ("en", False), ("en-US,zh;q=0.5", False), ("", False), (None, False), ("zhx", False),
])
def test_which_language(value: str | None, chinese: bool) -> None:
    assert is_chinese(value) is chinese


def test_every_code_has_a_chinese_message() -> None:
    assert {int(c) for c in ErrorCode if c != ErrorCode.OK} <= set(MESSAGES_ZH)


def test_bk_jobs_text_with_the_arguments_filled() -> None:
    assert localize(1241004, "Missing parameter [db_account_id]", "zh-cn") == \
        "请求参数[db_account_id]缺失"
    assert localize(1241010, "Invalid parameter [alias]: 'x' is taken", "zh-cn") == \
        "请求参数[alias]不合法\uff0c原因\uff1a'x' is taken"
    # a placeholder nothing fills goes with its brackets
    assert localize(1244003, "Account 12 does not exist in biz 2", "zh-cn") == "账号不存在"
    assert localize(1244006, "Job instance 5 does not exist", "zh-cn") == "作业实例不存在"
    # English, or no language: the message as it is
    assert localize(1244003, "Account 12 does not exist", "en") == "Account 12 does not exist"
    assert localize(1244003, "Account 12 does not exist", None) == "Account 12 does not exist"
    # a code with no Chinese text keeps its message
    assert localize(42, "odd", "zh-cn") == "odd"


SRC = Path(__file__).resolve().parents[2] / "src" / "jobfleet"


def codes_in_source() -> dict[int, str]:
    """Every error code the server's code names, with where: ``ErrorCode.X`` anywhere,
    and an int given to ``JobError(...)`` (first argument or ``code=``) directly."""
    found: dict[int, str] = {}
    members = ErrorCode.__members__
    for path in sorted(SRC.rglob("*.py")):
        where = str(path.relative_to(SRC))
        for node in ast.walk(ast.parse(path.read_text(), where)):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "ErrorCode"):
                assert node.attr in members, f"{where}: ErrorCode.{node.attr} does not exist"
                found.setdefault(int(members[node.attr]), where)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "JobError"):
                given = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "code")]
                for arg in given:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, int):
                        found.setdefault(arg.value, where)
    # what JobError's own helpers raise
    for helper in (JobError.missing("x"), JobError.invalid("x"), JobError.invalid("x", "y")):
        found.setdefault(helper.code, "domain/errors.py")
    return found


def test_every_code_the_source_uses_has_a_chinese_message() -> None:
    found = codes_in_source()
    assert len(found) > 50  # the walk sees the code base
    missing = {code: where for code, where in found.items()
               if code != ErrorCode.OK and code not in MESSAGES_ZH}
    assert not missing, f"codes with no Chinese message (add them to messages_zh.py): {missing}"


@pytest.mark.parametrize("code", sorted(int(c) for c in ErrorCode if c != ErrorCode.OK))
def test_each_chinese_message_renders_whole(code: int) -> None:
    """Filled from a message of any shape, no placeholder or half a bracket is left."""
    for message in ("Plain words", "Missing parameter [name]",
                    "Invalid parameter [a]: because", "Thing [1] of [2] and [3]: why"):
        text = localize(code, message, "zh-cn")
        assert text and "{" not in text and "}" not in text, (code, message, text)
        assert text.count("[") == text.count("]"), (code, message, text)
