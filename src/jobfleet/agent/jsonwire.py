"""JSON for the agent's wire and spool: orjson when installed, else the standard library.

The single-file agent (``jobfleet-agent.pyz``) cannot carry a compiled module; the
standard library writes the same compact JSON (no spaces, UTF-8 text).
"""

from __future__ import annotations

import json
from typing import Any

# orjson's decode error is a subclass of this one
JSONDecodeError = json.JSONDecodeError

try:
    import orjson
except ImportError:  # pragma: no cover - the zipapp
    orjson = None  # type: ignore[assignment]


def dumps(value: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def loads(data: bytes | str) -> Any:
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)
