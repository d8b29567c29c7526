"""Error messages in the caller's language."""

from __future__ import annotations

import pytest

from jobfleet.domain.errors import ErrorCode
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
