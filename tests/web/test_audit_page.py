"""The console's audit page: every column named in the page's language, and an entry
without a scope (a login, an administration change) shows a dash, not "None"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jobfleet.web import i18n
from jobfleet.web.pages import _templates

LOGIN = {"create_time": 1796630544987, "username": "admin", "app_code": "jobfleet-console",
         "action": "console_login", "resource_type": "user", "resource_id": "admin",
         "scope_type": None, "scope_id": None, "source_ip": "127.0.0.1"}


def render(rows: list[dict[str, Any]], lang: str = "en") -> str:
    words = i18n.translator(lang)
    return _templates().get_template("audit.html").render(
        t=lambda text: words.get(text, text), rows=rows, path="/audit", lang=lang,
        user="admin", csrf="", businesses=[], biz=2, version="0", js_words={}, run_names={})


def cells(html: str) -> list[list[str]]:
    table = html[html.index('<table class="list">'):]
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in table.split("<tr>")[1:]]


def test_an_entry_without_a_scope_shows_a_dash() -> None:
    job = {**LOGIN, "action": "fast_execute_script", "resource_type": "job_instance",
           "resource_id": "3", "scope_type": "biz", "scope_id": "2"}
    rows = cells(render([LOGIN, job]))
    assert "None" not in str(rows), rows
    assert rows[1][-2:] == ["-", "127.0.0.1"] and rows[2][-2:] == ["biz 2", "127.0.0.1"], rows


def test_every_column_is_named_in_the_pages_language() -> None:
    head = cells(render([], lang="zh"))[0]
    assert head == [i18n.ZH[w] for w in ("Time", "User", "App", "Action", "Resource",
                                         "Scope", "Source address")], head


def test_no_page_heads_a_column_with_an_untranslated_word() -> None:
    """A column head is asked through t(); only initialisms (ID, IP, OS) and signs (#)
    stand as they are."""
    templates = Path(i18n.__file__).parent / "templates"
    plain = {(page.name, word) for page in templates.glob("*.html")
             for word in re.findall(r"<th[^>]*>([^<{]+)</th>", page.read_text())}
    assert sorted((p, w) for p, w in plain if re.search("[a-z]", w)) == []
