"""The app codes jobfleet's own callers act under: none of them has a row among the apps."""

from __future__ import annotations

import re
import unicodedata

CONSOLE_APP_CODE = "jobfleet-console"
TOKEN_APP_CODE = "jobfleet-token"  # noqa: S105 -- an app code: personal tokens act under it
# heal rules kept from before rules recorded the app they were made through
HEAL_APP_CODE = "jobfleet-heal"

# an app row of one of these names would be taken for jobfleet's own caller
RESERVED_APP_CODES = frozenset({CONSOLE_APP_CODE, TOKEN_APP_CODE, HEAL_APP_CODE})

# BlueKing's API gateway issues app codes of this form only, so a code outside it could
# never be sent by a BlueKing client; it also keeps the X-Bkapi-Authorization header and
# audit entries free of spaces, quotes and control characters
APP_CODE_RULE = (
    "lowercase letters, digits, '_' and '-', starting with a letter or digit, "
    "at most 32 characters"
)
_APP_CODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def valid_app_code(code: str) -> bool:
    """Whether a new app may take ``code``; apps stored before the rule keep theirs."""
    return _APP_CODE.fullmatch(code) is not None


# bk-user's rule for a username (``bkuser.plugins.local.constants.USERNAME_REGEX``): a
# user BlueKing signs in is named so; it also keeps names free of spaces, quotes and
# control characters wherever they are shown or recorded
USERNAME_RULE = (
    "2 to 32 letters, digits, '_', '.' and '-', starting and ending with a letter or digit"
)
_USERNAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,30}[a-zA-Z0-9]")
# control, format (bidi overrides, zero-width) and line/paragraph separator characters
_UNSEEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def valid_username(name: str) -> bool:
    """Whether a new user may take ``name``; users stored before the rule keep theirs."""
    return _USERNAME.fullmatch(name) is not None


def has_control(text: str) -> bool:
    """Whether ``text`` holds a character that could end, hide or reorder a log line."""
    return any(unicodedata.category(ch) in _UNSEEN for ch in text)


def escape_control(text: str) -> str:
    """``text`` with each such character written out as its escape (``\\n``, ``\\u202e``)."""
    if not has_control(text):
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in _UNSEEN
        else ch
        for ch in text
    )
