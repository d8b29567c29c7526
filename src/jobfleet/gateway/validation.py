"""Checking what agents send against the protocol's types (``jobfleet.domain.protocol``).

The types live in ``domain`` with their constraints as ``annotated_types`` metadata;
the validators are built here, on the server's side only, so an agent never loads
pydantic. Every message is checked on its own: one bad message never costs its
neighbours in a frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from jobfleet.domain import protocol

_STRICT = ConfigDict(strict=True)
_Message = Annotated[protocol.AgentMessage, Field(discriminator="t")]
_MESSAGE: TypeAdapter[Any] = TypeAdapter(_Message, config=_STRICT)
_FRAME: TypeAdapter[Any] = TypeAdapter(list[_Message] | _Message, config=_STRICT)
# a refusal's detail is logged and sent back to the agent; pydantic and orjson may quote the
# offending input (an unknown tag in full), which an agent controls
_MAX_DETAIL = 200


@dataclass(frozen=True)
class Refusal:
    """A message (or a whole frame) that was not let through, and why."""

    # ``bad_json``, ``bad_type`` or ``bad_<field>``
    reason: str
    # what went wrong, without the offending value (it may be huge or binary)
    detail: str
    # the task id and seq the message named, when usable: the server acknowledges
    # them so the agent stops sending the message again
    task: str | None = None
    seq: int | None = None
    # the request id a refused ``reply`` names: the side that asked is told of the
    # refusal instead of waiting for an answer that never comes
    reply: str | None = None


def read_frame(
    raw: bytes | str, long_data: bool = False
) -> tuple[list[protocol.AgentMessage], list[Refusal]]:
    """The valid messages of one frame (a message or a list of them) and the refused ones.

    One pass over the bytes when everything is valid, which is what the hot path sees;
    a frame with a bad message is parsed again to sort the good from the bad.

    ``long_data``: the agent is of a release that did not bound its messages' output
    (``protocol.CAP_FRAMES``): an ``out`` or ``done`` whose ``data`` is longer than
    ``MAX_CHUNK_CHARS`` is taken whole, as its servers took it, not refused (and with
    it the task's output or its result).
    """
    # a frame of one message (what an agent sends most) skips the union's list branch:
    # a third of the check's cost
    one = raw.startswith(b"{") if isinstance(raw, bytes) else raw.startswith("{")
    adapter = _MESSAGE if one else _FRAME
    try:
        value = adapter.validate_json(raw)
    except ValidationError:
        pass
    else:
        return (value if isinstance(value, list) else [value]), []
    try:
        loaded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [], [Refusal("bad_json", str(exc)[:_MAX_DETAIL])]
    good: list[protocol.AgentMessage] = []
    bad: list[Refusal] = []
    for item in loaded if isinstance(loaded, list) else [loaded]:
        data = item.get("data") if long_data and isinstance(item, dict) else None
        try:
            if (
                isinstance(data, str)
                and len(data) > protocol.MAX_CHUNK_CHARS
                and item.get("t") in (protocol.OUTPUT, protocol.DONE)
            ):
                # everything else of the message is checked as ever
                message = _MESSAGE.validate_python({**item, "data": ""})
                message["data"] = data
                good.append(message)
            else:
                good.append(_MESSAGE.validate_python(item))
        except ValidationError as exc:
            bad.append(_refusal(item, exc))
    return good, bad


def _refusal(item: Any, exc: ValidationError) -> Refusal:
    error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    loc = [str(p) for p in error["loc"]]
    if not isinstance(item, dict) or error["type"].startswith("union_tag") or not loc:
        reason = "bad_type"
    else:
        # the discriminator value leads the location: ("done", "status")
        field = loc[1] if len(loc) > 1 else loc[0]
        reason = "bad_" + re.sub(r"[^a-z_]", "", field.lower())[:32]
    detail = f"{'.'.join(loc)}: {error['msg']}"[:_MAX_DETAIL]
    task = seq = reply = None
    if isinstance(item, dict):
        raw_task, raw_seq = item.get("id"), item.get("seq")
        if isinstance(raw_task, str) and len(raw_task) <= 64:
            task = raw_task
            if item.get("t") == protocol.REPLY:
                reply = raw_task
        if type(raw_seq) is int and 0 <= raw_seq <= protocol.INT32_MAX:
            seq = raw_seq
    return Refusal(reason, detail, task if seq is not None else None, seq, reply)


# (a union: a TypedDict alone may not take the strict config)
_LOAD: TypeAdapter[Any] = TypeAdapter(protocol.HostLoad | None, config=_STRICT)


def read_load(value: Any) -> protocol.HostLoad | None:
    """The host load a hello reports, checked like any message; None when it reports
    none (an older agent) or one that does not fit (then nothing is stored)."""
    if value is None:
        return None
    try:
        load: protocol.HostLoad | None = _LOAD.validate_python(value)
    except ValidationError:
        return None
    return load
