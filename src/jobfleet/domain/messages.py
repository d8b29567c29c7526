"""Error messages in the caller's language: bk-job's Chinese text for a code, or the English.

A BlueKing client names its language in the ``blueking-language`` header (``zh-cn``,
``en``); browsers and other clients send ``Accept-Language``. A Chinese caller gets
bk-job's message for the code, its ``{0}``, ``{1}``… filled from the English message:
the names in square brackets (``Missing parameter [db_account_id]``) in order, then the
reason after ``]: ``. A placeholder nothing fills is dropped with its brackets.
"""

from __future__ import annotations

import re

from jobfleet.domain.messages_zh import MESSAGES_ZH

_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
# a placeholder with the brackets or separator that frame it (dropped with it when unfilled)
# (full-width brackets and colon written as escapes: U+FF08, U+FF09, U+FF1A)
# (``[id={0}]`` goes whole too)
_PLACEHOLDER = re.compile(
    "(?P<before>\\[(?:[A-Za-z_]+=)?|[\uff08(]|[\uff1a:]\\s*)?"
    "\\{(?P<n>\\d+)\\}(?P<after>[\\]\uff09)])?"
)


def is_chinese(language: str | None) -> bool:
    """Whether a ``blueking-language`` or ``Accept-Language`` value asks for Chinese: its
    first (most preferred) tag is ``zh``, ``zh-cn``, ``zh-hans``…"""
    if not language:
        return False
    first = language.split(",", 1)[0].split(";", 1)[0].strip().lower().replace("_", "-")
    return first == "zh" or first.startswith("zh-")


def _arguments(message: str) -> list[str]:
    args = _BRACKETED.findall(message)
    _, sep, reason = message.partition("]: ")
    if sep and reason:
        args.append(reason)
    return args


def localize(code: int, message: str, language: str | None) -> str:
    """``message`` in ``language``: bk-job's Chinese for ``code``, else as it is."""
    if not is_chinese(language):
        return message
    template = MESSAGES_ZH.get(int(code))
    if template is None:
        return message
    args = _arguments(message)

    def fill(match: re.Match[str]) -> str:
        index = int(match["n"])
        if index >= len(args):
            return ""
        return f"{match['before'] or ''}{args[index]}{match['after'] or ''}"

    return _PLACEHOLDER.sub(fill, template)
