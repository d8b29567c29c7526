"""The app codes jobfleet's own callers act under: none of them has a row among the apps."""

from __future__ import annotations

CONSOLE_APP_CODE = "jobfleet-console"
TOKEN_APP_CODE = "jobfleet-token"  # noqa: S105 -- an app code: personal tokens act under it
# heal rules kept from before rules recorded the app they were made through
HEAL_APP_CODE = "jobfleet-heal"

# an app row of one of these names would be taken for jobfleet's own caller
RESERVED_APP_CODES = frozenset({CONSOLE_APP_CODE, TOKEN_APP_CODE, HEAL_APP_CODE})
