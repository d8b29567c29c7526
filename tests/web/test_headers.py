"""The console's script policy and the templates it must hold for: no inline handler,
no executed inline script, and every action a control names is one console.js has."""

from __future__ import annotations

import re
from pathlib import Path

from jobfleet.web import headers

WEB = Path(headers.__file__).parent
TEMPLATES = sorted((WEB / "templates").glob("*.html"))


def directive(name: str) -> list[str]:
    for part in headers.POLICY.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    raise AssertionError(f"no {name} in {headers.POLICY}")


def test_scripts_come_from_the_server_only() -> None:
    assert directive("script-src") == ["'self'"]
    assert "'unsafe-inline'" not in directive("default-src")
    # htmx's indicator style is an inline <style>
    assert "'unsafe-inline'" in directive("style-src")


def test_no_template_holds_an_inline_handler_or_script() -> None:
    for path in TEMPLATES:
        text = path.read_text()
        assert not re.search(r"\son[a-z]+\s*=", text), path.name
        assert "javascript:" not in text, path.name
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (path.name, tag)


def test_every_named_action_is_in_the_table() -> None:
    script = (WEB / "static" / "console.js").read_text()
    table = script[script.index("jf.actions = {"):]
    table = table[:table.index("\n};")]
    known = set(re.findall(r"^\s*'([a-z-]+)': function", table, re.M))
    named: set[tuple[str, str]] = set()
    for path in TEMPLATES:
        named |= {(path.name, a) for a in
                  re.findall(r'data-on-(?:click|submit|change|input)="([^"]+)"', path.read_text())}
    assert named, "no template names an action"
    missing = {(page, a) for page, a in named if a not in known}
    assert not missing, missing
    unused = known - {a for _, a in named}
    assert not unused, unused
