"""Messages between the server and its agents.

Both sides speak JSON objects over one WebSocket per agent. Each object has a
``t`` (type) key. A host task is named ``<step_instance_id>:<execute_count>:<bk_host_id>``;
the agent numbers the output of a task from 1 and ends it with a ``done`` message
whose ``seq`` follows the last chunk. The server acknowledges what it has stored;
the agent keeps everything unacknowledged on disk and sends it again after a
reconnect, so the server ingests by (task, seq) and ignores repeats.

Everything an agent sends is checked against the types below before the server
acts on it (``read_frame``): a message that does not fit is refused on its own
and the others of its frame go on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

PROTOCOL_VERSION = 1

# Agent -> server
HELLO = "hello"
OUTPUT = "out"
DONE = "done"
FILE_LOG = "file_log"
REPLY = "reply"
# Server -> agent
WELCOME = "welcome"
FILE_LIST = "file_list"
FILE_UPLOAD = "file_upload"
RUN = "run"
KILL = "kill"
ACK = "ack"
# process management and messages for local plugins (GSE): answered with a ``reply``
PROC = "proc"
DISPATCH = "dispatch"

# The largest WebSocket frame the server reads; larger ones close the connection.
MAX_FRAME_BYTES = 4 * 1024 * 1024
# The longest ``data`` one message may carry (characters); the agent sends far less.
MAX_CHUNK_CHARS = 1024 * 1024
# What an agent puts in one message and one frame, well inside the server's limits
# even when every character needs a six-byte JSON escape.
AGENT_CHUNK_CHARS = 128 * 1024
AGENT_FRAME_BYTES = 1024 * 1024
# file items per message: a download of many files reports them over several messages
MAX_FILE_ITEMS = 1000
AGENT_FILE_ITEMS = 200
MAX_VARS_CHARS = 1024 * 1024
# Sequence numbers an agent may use; the server's own notes sort after them.
MAX_AGENT_SEQ = 999_999_999

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
Millis = Annotated[int, Field(ge=0, le=INT64_MAX)]
Size = Annotated[int, Field(ge=0, le=INT64_MAX)]
Seq = Annotated[int, Field(ge=0, le=MAX_AGENT_SEQ)]
# step (int64) : attempt (int32) : host (int64); digits bound so each fits its column
TaskId = Annotated[str, Field(pattern=r"^[0-9]{1,18}:[0-9]{1,9}:[0-9]{1,18}$")]
Chunk = Annotated[str, Field(max_length=MAX_CHUNK_CHARS)]
ShortText = Annotated[str, Field(max_length=255)]
PathText = Annotated[str, Field(max_length=4096)]
LongText = Annotated[str, Field(max_length=65536)]
Speed = Annotated[float, Field(ge=0, allow_inf_nan=False)]

_STRICT = ConfigDict(strict=True)


class Hello(TypedDict):
    t: Literal["hello"]
    version: str
    hostname: str
    os: str
    # tasks the agent holds: running now or finished with results not yet acknowledged
    known: list[str]
    labels: NotRequired[dict[str, str]]
    ipv6: NotRequired[str]


class Welcome(TypedDict):
    t: Literal["welcome"]
    agent_id: str
    bk_host_id: int
    heartbeat: float


class Run(TypedDict):
    t: Literal["run"]
    id: str
    lang: int
    script: str
    args: list[str]
    account: str
    timeout: int
    env: dict[str, str]
    max_output: int
    # args hold a sensitive parameter: the agent passes them some other way than argv
    sensitive: NotRequired[bool]


class Kill(TypedDict):
    t: Literal["kill"]
    id: str
    reason: str


@with_config(_STRICT)
class FileItem(TypedDict):
    """One file of a download task: its progress or final state."""

    n: Count
    status: NotRequired[Int32]
    size: NotRequired[Size | None]
    speed: NotRequired[Speed | None]
    progress: NotRequired[Annotated[int, Field(ge=0, le=100)]]
    log: NotRequired[LongText]


FileItems = Annotated[list[FileItem], Field(max_length=MAX_FILE_ITEMS)]


@with_config(_STRICT)
class Output(TypedDict):
    t: Literal["out"]
    id: TaskId
    seq: Seq
    data: Chunk
    files: NotRequired[FileItems]


@with_config(_STRICT)
class Done(TypedDict):
    t: Literal["done"]
    id: TaskId
    seq: Seq
    status: Int32
    exit: Int32 | None
    start: Millis | None
    end: Millis | None
    data: Chunk
    tag: NotRequired[ShortText]
    files: NotRequired[FileItems]
    # what the script wrote to $JOBFLEET_VARS_FILE
    vars: NotRequired[Annotated[str, Field(max_length=MAX_VARS_CHARS)] | None]


@with_config(_STRICT)
class FileLog(TypedDict):
    """Progress of a download task: not spooled, not acknowledged."""

    t: Literal["file_log"]
    id: TaskId
    files: FileItems


@with_config(_STRICT)
class ListedFile(TypedDict):
    path: PathText
    rel: PathText
    size: NotRequired[Size | None]
    mode: NotRequired[Annotated[int, Field(ge=0, le=0o7777)]]
    is_dir: NotRequired[bool]


@with_config(_STRICT)
class UploadResult(TypedDict):
    blob: Annotated[str, Field(max_length=64)]
    status: NotRequired[Int32]
    error: NotRequired[LongText]
    size: NotRequired[Size]
    sha256: NotRequired[Annotated[str, Field(max_length=64)]]
    speed: NotRequired[Speed]


@with_config(_STRICT)
class Reply(TypedDict):
    """An agent's answer to a request (``file_list``, ``file_upload``)."""

    t: Literal["reply"]
    id: Annotated[str, Field(max_length=64)]
    status: NotRequired[Int32]
    error: NotRequired[LongText]
    files: NotRequired[list[ListedFile]]
    missing: NotRequired[list[LongText]]
    results: NotRequired[list[UploadResult]]
    # the answer to ``proc``: the state of the process after the operation
    proc: NotRequired[ProcState]
    # the answer to ``dispatch``: where the message was put
    delivered: NotRequired[PathText]


# process management (GSE) -------------------------------------------------------------

# operation codes, as GSE numbers them (op_type)
PROC_START = 0
PROC_STOP = 1
PROC_STATUS = 2
PROC_DELEGATE = 3
PROC_UNDELEGATE = 4
PROC_RESTART = 7
PROC_RELOAD = 8
PROC_KILL = 9
PROC_OPS = (
    PROC_START,
    PROC_STOP,
    PROC_STATUS,
    PROC_DELEGATE,
    PROC_UNDELEGATE,
    PROC_RESTART,
    PROC_RELOAD,
    PROC_KILL,
)


class ProcSpec(TypedDict):
    """A process the agent manages: where it lives and how it is controlled."""

    namespace: str
    name: str
    # the executable's name, for status; the pid file says which process it is
    proc_name: str
    setup_path: str
    pid_file: str
    account: str
    start_cmd: str
    stop_cmd: str
    restart_cmd: str
    reload_cmd: str
    kill_cmd: str
    # seconds after start (or restart) to look for the pid file
    start_check_secs: int


class Proc(TypedDict):
    t: Literal["proc"]
    id: str
    op: int
    spec: ProcSpec


@with_config(_STRICT)
class ProcState(TypedDict):
    """What an agent says about one managed process."""

    # 0: the operation succeeded; otherwise GSE's error code (828 already running, ...)
    code: Int32
    message: LongText
    # 0 unregistered, 1 running, 2 stopped
    status: Annotated[int, Field(ge=0, le=2)]
    pid: Annotated[int, Field(ge=-1, le=INT32_MAX)]
    delegated: bool
    restarts: Count
    # epoch milliseconds of the last start, or 0
    start_time: Millis


class Dispatch(TypedDict):
    t: Literal["dispatch"]
    id: str
    message_id: str
    slot_id: int
    content: str


def proc_request(op: int, spec: ProcSpec) -> Proc:
    """Ask an agent to operate (or report on) a managed process; ``id`` is set on sending."""
    return {"t": "proc", "id": "", "op": op, "spec": spec}


def dispatch_request(message_id: str, slot_id: int, content: str) -> Dispatch:
    """Hand a message to the local plugins that listen on ``slot_id``."""
    return {
        "t": "dispatch",
        "id": "",
        "message_id": message_id,
        "slot_id": slot_id,
        "content": content,
    }


def proc_state(
    code: int,
    message: str,
    *,
    status: int,
    pid: int = -1,
    delegated: bool = False,
    restarts: int = 0,
    start_time: int = 0,
) -> ProcState:
    return {
        "code": code,
        "message": message,
        "status": status,
        "pid": pid,
        "delegated": delegated,
        "restarts": restarts,
        "start_time": start_time,
    }


class Ack(TypedDict):
    t: Literal["ack"]
    # [task id, highest seq stored]
    acks: list[list[Any]]


AgentMessage = Annotated[Output | Done | FileLog | Reply, Field(discriminator="t")]
_MESSAGE: TypeAdapter[Any] = TypeAdapter(AgentMessage)
_FRAME: TypeAdapter[Any] = TypeAdapter(list[AgentMessage] | AgentMessage)


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


def read_frame(raw: bytes | str) -> tuple[list[dict[str, Any]], list[Refusal]]:
    """The valid messages of one frame (a message or a list of them) and the refused ones.

    One pass over the bytes when everything is valid, which is what the hot path sees;
    a frame with a bad message is parsed again to sort the good from the bad.
    """
    try:
        value = _FRAME.validate_json(raw)
    except ValidationError:
        pass
    else:
        return (value if isinstance(value, list) else [value]), []
    try:
        loaded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [], [Refusal("bad_json", str(exc)[:200])]
    good: list[dict[str, Any]] = []
    bad: list[Refusal] = []
    for item in loaded if isinstance(loaded, list) else [loaded]:
        try:
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
    detail = f"{'.'.join(loc)}: {error['msg']}"[:200]
    task = seq = None
    if isinstance(item, dict):
        raw_task, raw_seq = item.get("id"), item.get("seq")
        if isinstance(raw_task, str) and len(raw_task) <= 64:
            task = raw_task
        if type(raw_seq) is int and 0 <= raw_seq <= INT32_MAX:
            seq = raw_seq
    return Refusal(reason, detail, task if seq is not None else None, seq)


# Output is kept as text. Bytes that are not UTF-8 become U+FFFD (the decoder's
# replacement), NUL becomes U+2400 (SYMBOL FOR NULL), and a lone surrogate (which
# no UTF-8 text can hold) becomes U+FFFD: PostgreSQL text takes neither NUL nor
# surrogates, and both backends must return the same thing.
NUL_SYMBOL = "\u2400"
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` as any database can store it (see above); the same string if it already is."""
    if "\x00" in text:
        text = text.replace("\x00", NUL_SYMBOL)
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


def task_id(step_instance_id: int, execute_count: int, bk_host_id: int) -> str:
    return f"{step_instance_id}:{execute_count}:{bk_host_id}"


def parse_task_id(value: str) -> tuple[int, int, int]:
    step, count, host = value.split(":")
    return int(step), int(count), int(host)
