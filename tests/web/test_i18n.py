"""Status names in the console's languages."""

from __future__ import annotations

import re
from pathlib import Path

from jobfleet.cli._render import host_status_name, run_status_label
from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.web import i18n, pages

RUN = {int(s): s.name for s in RunStatus}
HOST = {int(s): s.name for s in HostStatus}


def test_every_status_has_a_chinese_name() -> None:
    assert set(i18n.RUN_STATUS_ZH) == set(RUN)
    assert set(i18n.HOST_STATUS_ZH) == set(HOST)


def test_names_follow_the_language() -> None:
    zh = i18n.status_namer("zh", pages.RUN_NAMES, i18n.RUN_STATUS_ZH)
    en = i18n.status_namer("en", pages.RUN_NAMES, i18n.RUN_STATUS_ZH)
    assert zh(3) == "执行成功" and zh("7") == "等待用户"
    assert en(3) == "success" and en(4) == "failed"
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


def test_english_names_are_those_of_the_cli_and_the_sdk() -> None:
    """A status reads the same on the console, in ``jobfleet status`` and in the SDK's
    ``HOST_STATUS_DESC``: never an enum constant such as SCRIPT_NOT_ZERO_EXIT_CODE."""
    run = i18n.status_namer("en", pages.RUN_NAMES, i18n.RUN_STATUS_ZH)
    host = i18n.status_namer("en", pages.HOST_NAMES, i18n.HOST_STATUS_ZH)
    assert {s: run(s) for s in RUN} == {s: run_status_label(s) for s in RUN}
    assert {s: host(s) for s in HOST} == {s: host_status_name(s) for s in HOST}
    assert host(104) == "Script exit code non-zero"
