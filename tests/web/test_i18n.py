"""Status names in the console's languages."""

from __future__ import annotations

import re
from pathlib import Path

from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.web import i18n

RUN = {int(s): s.name for s in RunStatus}
HOST = {int(s): s.name for s in HostStatus}


def test_every_status_has_a_chinese_name() -> None:
    assert set(i18n.RUN_STATUS_ZH) == set(RUN)
    assert set(i18n.HOST_STATUS_ZH) == set(HOST)


def test_names_follow_the_language() -> None:
    zh = i18n.status_namer("zh", RUN, i18n.RUN_STATUS_ZH)
    en = i18n.status_namer("en", RUN, i18n.RUN_STATUS_ZH)
    assert zh(3) == "执行成功" and zh("7") == "等待用户"
    assert en(3) == "SUCCESS"
    # an unknown number or junk is shown as it is
    assert zh(99) == "99" and en("x") == "x"
    host = i18n.status_namer("zh", HOST, i18n.HOST_STATUS_ZH)
    assert host(104) == "脚本返回码非零"


def test_every_word_a_page_asks_for_has_its_chinese() -> None:
    templates = Path(i18n.__file__).parent / "templates"
    asked = {
        (page.name, word)
        for page in templates.glob("*.html")
        for word in re.findall(r"\bt\('([^']+)'\)", page.read_text())
    }
    assert asked
    assert sorted((page, word) for page, word in asked if word not in i18n.ZH) == []
