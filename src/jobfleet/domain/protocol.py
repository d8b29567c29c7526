"""Messages between the server and its agents.

Both sides speak JSON objects over one WebSocket per agent. Each object has a
``t`` (type) key. A host task is named ``<step_instance_id>:<execute_count>:<bk_host_id>``;
the agent numbers the output of a task from 1 and ends it with a ``done`` message
whose ``seq`` follows the last chunk. The server acknowledges what it has stored;
the agent keeps everything unacknowledged on disk and sends it again after a
reconnect, so the server ingests by (task, seq) and ignores repeats.

Every message has a type here and a constructor named for it (``hello``,
``output``, ``done``, ``run``, ``kill``, ``ack``, ...): both sides build messages
with the constructors and read them as these types. Everything an agent sends is
checked against the types before the server acts on it
(``jobfleet.gateway.validation.read_frame``): a message that does not fit is
refused on its own and the others of its frame go on.

The agent imports this module, so it holds no validator: the constraints are small
markers below (``Ge``, ``Le``, ``MaxLen``, ``Pattern``, ``Finite``) that pydantic
honours when the gateway builds its validators, and that cost the agent nothing.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NotRequired

from jobfleet.domain import typeddict
from jobfleet.domain.status import HostStatus

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypedDict
else:  # pydantic reads TypedDicts of typing_extensions only, before 3.12 (agents need not)
    TypedDict = typeddict.base()

# The protocol's major version, in every hello (``protocol``). Within one major version
# an agent and a server of different releases understand each other: what a release
# adds is a capability the agent announces (``caps``) and the server uses only with
# agents that announced it. An agent from before announced neither (``protocol`` 1,
# no capabilities). A server serves an agent of a major version it does not know (a
# newer agent) with the capabilities both know.
PROTOCOL_VERSION = 1

# Capabilities an agent announces in its hello. The server sends a message that needs
# one only to agents that announced it, and answers for the others in their name.
# a sensitive parameter stays off the script's command line (``ScriptRun.sensitive``)
CAP_SENSITIVE = "sensitive"
# processes managed for GSE (``proc``)
CAP_PROC = "proc"
# messages handed to local plugins (``dispatch``)
CAP_DISPATCH = "dispatch"
# frames kept within ``MAX_FRAME_BYTES`` and output within ``MAX_CHUNK_CHARS`` a message;
# an agent from before put everything it held in one frame (up to the 64 MiB the server
# then read), see ``LEGACY_FRAME_BYTES``, and a burst of output in one message``
CAP_FRAMES = "frames"
# a run whose ``kind`` the agent does not know ends failed, with its reason, at once
CAP_KINDS = "kinds"
# what this release's agent announces
AGENT_CAPS = (CAP_SENSITIVE, CAP_PROC, CAP_DISPATCH, CAP_FRAMES, CAP_KINDS)
# at most this many capabilities of this many characters are read from a hello
MAX_CAPS = 64
MAX_CAP_CHARS = 64

# the close code a connection gets when another connection of its agent (same
# credential) replaces it; the agent tells its operator that the credential is shared
CLOSE_REPLACED = 4409

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
# the ``kind`` of a run message that downloads files instead of running a script
DOWNLOAD = "download"
# process management and messages for local plugins (GSE): answered with a ``reply``
PROC = "proc"
DISPATCH = "dispatch"

# The largest WebSocket frame the server reads; larger ones close the connection.
MAX_FRAME_BYTES = 4 * 1024 * 1024
# The largest frame read from an agent that did not announce ``CAP_FRAMES``: the limit
# of the servers those agents were made for. Such an agent sends everything it held over
# a disconnection in one frame; refused, the frame would come back after each reconnect.
LEGACY_FRAME_BYTES = 64 * 1024 * 1024
# The longest ``data`` one message may carry (characters); the agent sends far less.
MAX_CHUNK_CHARS = 1024 * 1024
# What an agent puts in one message and one frame, well inside the server's limits
# even when every character needs a six-byte JSON escape.
AGENT_CHUNK_CHARS = 128 * 1024
AGENT_FRAME_BYTES = 1024 * 1024
# file items per message: a download of many files reports them over several messages
MAX_FILE_ITEMS = 1000
# items of each list of a ``reply``: more than a frame holds of any honest answer (a
# listed file takes some 40 bytes), well short of the empty strings it holds
MAX_REPLY_ITEMS = 200_000
AGENT_FILE_ITEMS = 200

# Bundles: many small files in one request, each way. A file step that copies a tree
# of small files would otherwise cost one HTTP round trip, one authentication and a few
# database statements per file and per host. A source agent sends, and a target agent
# asks for, up to ``BUNDLE_MAX_FILES`` files of at most ``BUNDLE_MAX_FILE_BYTES`` each
# and ``BUNDLE_MAX_BYTES`` in all, in one request; the bytes go one file after another,
# and each end checks every file's size and SHA-256. Larger files keep their own request
# (range-resumable).
BUNDLE_MAX_FILES = 512
BUNDLE_MAX_FILE_BYTES = 1024 * 1024
# an agent holds a bundle in memory while it sends or places it, up to four at a time
BUNDLE_MAX_BYTES = 4 * 1024 * 1024
# a bundle request's body: the blob ids as a JSON document (ids are 32 hex characters)
BUNDLE_MAX_REQUEST_BYTES = 64 * 1024
# the blob path both bundle routes answer on
BUNDLE_PATH = "bundle"


class ExactReader:
    """Exactly ``n`` bytes at a time from a stream of chunks of any size: how both ends
    read a bundle's manifest and files."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    async def take(self, n: int) -> bytes | None:
        """The next ``n`` bytes, or None if the stream ends first."""
        while len(self._buffer) < n:
            try:
                self._buffer += await anext(self._chunks)
            except StopAsyncIteration:
                return None
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def rest(self) -> AsyncIterator[bytes]:
        """What is left of the stream."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            yield data
        async for chunk in self._chunks:
            yield chunk


MAX_VARS_CHARS = 1024 * 1024
# Sequence numbers an agent may use; the server's own notes sort after them.
MAX_AGENT_SEQ = 999_999_999

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class _Constraint:
    """A bound pydantic puts in the core schema of the annotated type, as it does for
    ``annotated_types`` metadata (which the agent then need not import: 0.6 MiB)."""

    # the key of pydantic-core's int, float, str and list schemas
    key: ClassVar[str]

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        schema = handler(source)
        schema[self.key] = getattr(self, self.key)
        return schema


@dataclass(frozen=True)
class Ge(_Constraint):
    ge: int
    key = "ge"


@dataclass(frozen=True)
class Le(_Constraint):
    le: int
    key = "le"


@dataclass(frozen=True)
class MaxLen(_Constraint):
    max_length: int
    key = "max_length"


@dataclass(frozen=True)
class Pattern:
    """A string constraint ``annotated_types`` has no word for: the whole value matches."""

    regex: str

    # the hook pydantic calls with the schema of the annotated type; nothing here imports it
    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        schema = handler(source)
        schema["pattern"] = self.regex
        return schema


@dataclass(frozen=True)
class Finite:
    """A float that is neither infinite nor NaN (JSON as Python writes it may hold both)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        schema = handler(source)
        schema["allow_inf_nan"] = False
        return schema


Int32 = Annotated[int, Ge(-(2**31)), Le(INT32_MAX)]
Count = Annotated[int, Ge(0), Le(INT32_MAX)]
Millis = Annotated[int, Ge(0), Le(INT64_MAX)]
Size = Annotated[int, Ge(0), Le(INT64_MAX)]
Seq = Annotated[int, Ge(0), Le(MAX_AGENT_SEQ)]
# step (int64) : attempt (int32) : host (int64); digits bound so each fits its column
TaskId = Annotated[str, Pattern(r"^[0-9]{1,18}:[0-9]{1,9}:[0-9]{1,18}$")]
Chunk = Annotated[str, MaxLen(MAX_CHUNK_CHARS)]
ShortText = Annotated[str, MaxLen(255)]
PathText = Annotated[str, MaxLen(4096)]
LongText = Annotated[str, MaxLen(65536)]
Speed = Annotated[float, Ge(0), Finite()]
Percent = Annotated[int, Ge(0), Le(100)]
Rate = Annotated[float, Ge(0), Le(100), Finite()]
FileMode = Annotated[int, Ge(0), Le(0o7777)]
Digest = Annotated[str, MaxLen(64)]
RequestId = Annotated[str, MaxLen(64)]
Vars = Annotated[str, MaxLen(MAX_VARS_CHARS)]
# base64 of the pieces' digests: 1 MiB holds those of a file of about 96 GiB
PieceDigests = Annotated[str, MaxLen(1 << 20)]


# Agent -> server ------------------------------------------------------------------


class HostLoad(TypedDict):
    """How loaded the host is and since when the agent runs, as GSE's ``list_agent_info``
    reports them: CPU and memory in use (percent of the host's) and the agent's start
    (epoch ms). Sent in the hello and, when the welcome asks, every ``stats_every`` s."""

    cpu: Rate
    mem: Rate
    started: Millis


class Stats(TypedDict):
    t: Literal["stats"]
    load: HostLoad


class Hello(TypedDict):
    """The first message of every connection: who the host is and what it holds."""

    t: Literal["hello"]
    version: str
    hostname: str
    os: str
    os_name: NotRequired[str]
    ipv6: NotRequired[str]
    labels: NotRequired[dict[str, str]]
    # ``host:port`` where the agent serves file pieces to peers (opt-in; an empty
    # host means the address it connects from)
    peer: NotRequired[str]
    # tasks the agent holds: running now or finished with results not yet acknowledged
    known: list[str]
    # the host's load (agents before it sent none)
    load: NotRequired[HostLoad]
    # ``PROTOCOL_VERSION`` and the capabilities the agent has (agents before sent neither)
    protocol: NotRequired[int]
    caps: NotRequired[list[str]]


class FileItem(TypedDict):
    """One file of a download task: its progress or final state."""

    n: Count
    status: NotRequired[Int32]
    size: NotRequired[Size | None]
    speed: NotRequired[Speed | None]
    progress: NotRequired[Percent]
    log: NotRequired[LongText]


FileItems = Annotated[list[FileItem], MaxLen(MAX_FILE_ITEMS)]


class Output(TypedDict):
    """A chunk of a task's output, numbered from 1."""

    t: Literal["out"]
    id: TaskId
    seq: Seq
    data: Chunk
    files: NotRequired[FileItems]


class Done(TypedDict):
    """The end of a task; its ``seq`` follows the last chunk."""

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
    vars: NotRequired[Vars | None]


class FileLog(TypedDict):
    """Progress of a download task: not spooled, not acknowledged."""

    t: Literal["file_log"]
    id: TaskId
    files: FileItems


class ListedFile(TypedDict):
    path: PathText
    rel: PathText
    size: NotRequired[Size | None]
    mode: NotRequired[FileMode]
    is_dir: NotRequired[bool]


class UploadResult(TypedDict):
    blob: Digest
    status: NotRequired[Int32]
    error: NotRequired[LongText]
    size: NotRequired[Size]
    sha256: NotRequired[Digest]
    speed: NotRequired[Speed]
    # the answer to ``file_seed``: base64 of the SHA-256 of each piece
    pieces: NotRequired[PieceDigests]


class Reply(TypedDict):
    """An agent's answer to a request (``file_list``, ``file_upload``)."""

    t: Literal["reply"]
    id: RequestId
    status: NotRequired[Int32]
    error: NotRequired[LongText]
    files: NotRequired[Annotated[list[ListedFile], MaxLen(MAX_REPLY_ITEMS)]]
    missing: NotRequired[Annotated[list[LongText], MaxLen(MAX_REPLY_ITEMS)]]
    results: NotRequired[Annotated[list[UploadResult], MaxLen(MAX_REPLY_ITEMS)]]
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


class ProcState(TypedDict):
    """What an agent says about one managed process."""

    # 0: the operation succeeded; otherwise GSE's error code (828 already running, ...)
    code: Int32
    message: LongText
    # 0 unregistered, 1 running, 2 stopped
    status: Annotated[int, Ge(0), Le(2)]
    pid: Annotated[int, Ge(-1), Le(INT32_MAX)]
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


# what the gateway validates (``Hello`` is read on its own, before these)
AgentMessage = Output | Done | FileLog | Reply | Stats


# Server -> agent ------------------------------------------------------------------


class Welcome(TypedDict):
    t: Literal["welcome"]
    agent_id: str
    bk_host_id: int
    heartbeat: float
    server_version: str
    # send ``stats`` this often (s); servers before it did not ask
    stats_every: NotRequired[float]


class ScriptRun(TypedDict):
    """Run a script; ``id`` is the task id."""

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
    # give the script a file for ``name=value`` lines (variables it sets)
    collect_vars: NotRequired[bool]
    # base64 of the script's bytes, for a script that is not UTF-8 (``exact_script``):
    # the agent runs these bytes and ignores ``script``
    script_b64: NotRequired[str]


def at_or_below(path: str, base: str) -> bool:
    """Whether ``path`` is ``base`` or lies below it; both normal (``posixpath.normpath``).
    A download item's ``dest`` is at or below its ``root``: the server and the agent
    decide it with this one rule."""
    return path == base or path.startswith(base.rstrip("/") + "/")


class DownloadItem(TypedDict):
    """One file (or directory entry) a download task puts in place."""

    n: int
    blob: str
    dest: str
    # the operator's target path (its variables expanded) ``dest`` is below: the agent
    # follows symlinks in it as given and none below it; an agent of an earlier release
    # ignores it and follows every symlink, and a server of an earlier release sends none
    root: NotRequired[str]
    # unknown for a file whose source has not said (the agent checks what it has)
    size: int | None
    sha256: str | None
    mode: int
    is_dir: bool
    # ``ip:path`` of the source, for the log
    src: str
    # base64 of the SHA-256 of each piece (``domain.pieces``), for a swarm download
    pieces: NotRequired[str]
    # the source agent serving this file's pieces itself (``file_seed``)
    seed: NotRequired[ItemSeed]


class ItemSeed(TypedDict):
    """Where a swarm takes a file's pieces first: its source agent's peer port."""

    peer: str
    transfer: str
    token: str
    # the file's index in the source's share
    n: int


class DownloadRun(TypedDict):
    """Fetch files from the server into place; ``id`` is the task id."""

    t: Literal["run"]
    id: str
    kind: Literal["download"]
    items: list[DownloadItem]
    account: str
    create_dirs: bool
    speed_limit: int | None
    timeout: int
    max_size: int | None
    # peer-to-peer: the transfer's swarm within this host's cloud area
    swarm: NotRequired[Swarm]


# peer-to-peer files: a file is cut in pieces of this size, each with its SHA-256
PIECE_SIZE = 4 * 1024 * 1024
DIGEST_SIZE = 32


# What a copied entry keeps of the mode its source had: the permission bits as they were,
# and a directory's sticky bit. Set-ID bits never travel: the copy belongs to the step's
# account on every target, and a source host (hostile, or only careless) would otherwise
# hand that account's identity, root's often, to a program any local user there can run.
FILE_MODE_KEPT = 0o777
DIR_MODE_KEPT = 0o1777


def transferred_mode(mode: int, *, is_dir: bool) -> int:
    """The mode a file (or directory entry) gets on the targets from ``mode`` at its source."""
    return mode & (DIR_MODE_KEPT if is_dir else FILE_MODE_KEPT)


def piece_count(size: int, piece_size: int = PIECE_SIZE) -> int:
    return (size + piece_size - 1) // piece_size if size > 0 else 0


class Swarm(TypedDict):
    """Which peers share a download's pieces, and the token they show each other."""

    transfer: str
    token: str
    # unix time after which peers refuse the token
    expires: int
    piece_size: int
    # ``host:port`` of every member; piece g (counted over all items) is sent by
    # the server to member g mod len(members) first
    members: list[str]
    # this host's index in ``members``
    me: int


Run = ScriptRun | DownloadRun


class Kill(TypedDict):
    t: Literal["kill"]
    id: str
    reason: str


class Ack(TypedDict):
    t: Literal["ack"]
    # [task id, highest seq stored]
    acks: list[list[Any]]


class FileList(TypedDict):
    """Ask a source agent which files ``patterns`` name; answered by a ``reply``."""

    t: Literal["file_list"]
    patterns: list[str]
    account: str
    id: str


class UploadItem(TypedDict):
    n: int
    path: str
    blob: str


class FileUpload(TypedDict):
    """Ask a source agent to stream files to the server's blobs; answered by a ``reply``."""

    t: Literal["file_upload"]
    items: list[UploadItem]
    account: str
    speed_limit: int | None
    max_size: int | None
    id: str
    # the files were offered on the peer port under this transfer (``file_seed``):
    # stop offering them a while after the upload
    seed_transfer: NotRequired[str]


class SeedOffer(TypedDict):
    transfer: str
    token: str
    # unix time after which the token is refused
    expires: int
    piece_size: int


class FileSeed(TypedDict):
    """Ask a source agent with a peer port to hash its files' pieces and serve them to
    the step's targets; answered by a ``reply`` whose ``results`` carry ``pieces``
    (``blob`` holding the item's ``n``)."""

    t: Literal["file_seed"]
    items: list[UploadItem]
    account: str
    max_size: int | None
    seed: SeedOffer
    id: str


ServerMessage = Welcome | ScriptRun | DownloadRun | Kill | Ack | FileList | FileUpload | FileSeed


# Constructors: the one place each message is built, keys in their wire order ----------


def hello(
    *,
    version: str,
    hostname: str,
    os: str,
    os_name: str,
    ipv6: str,
    labels: dict[str, str],
    known: list[str],
    peer: str = "",
    load: HostLoad | None = None,
    caps: list[str] | None = None,
) -> Hello:
    message: Hello = {
        "t": "hello",
        "version": version,
        "hostname": hostname,
        "os": os,
        "os_name": os_name,
        "ipv6": ipv6,
        "labels": labels,
        "known": known,
    }
    if peer:
        message["peer"] = peer
    if load is not None:
        message["load"] = load
    message["protocol"] = PROTOCOL_VERSION
    message["caps"] = list(AGENT_CAPS) if caps is None else caps
    return message


def hello_caps(message: dict[str, Any]) -> frozenset[str] | None:
    """The capabilities a hello announces; None for an agent from before they were
    announced (no ``caps``). What is not a list of short strings counts as none: a
    capability this server does not know is kept, and never asked for."""
    caps = message.get("caps")
    if caps is None:
        return None
    if not isinstance(caps, list):
        return frozenset()
    return frozenset(
        c for c in caps[:MAX_CAPS] if isinstance(c, str) and len(c) <= MAX_CAP_CHARS
    )


def output(id: str, seq: int, data: str, files: list[FileItem] | None = None) -> Output:
    message: Output = {"t": "out", "id": id, "seq": seq, "data": data}
    if files is not None:
        message["files"] = files
    return message


def done(
    id: str,
    seq: int,
    *,
    status: int,
    exit: int | None,
    start: int | None,
    end: int | None,
    data: str,
    tag: str | None = None,
    files: list[FileItem] | None = None,
    vars: str | None = None,
) -> Done:
    message: Done = {
        "t": "done",
        "id": id,
        "seq": seq,
        "status": status,
        "exit": exit,
        "start": start,
        "end": end,
        "data": data,
    }
    if tag is not None:
        message["tag"] = tag
    if files is not None:
        message["files"] = files
    if vars:
        message["vars"] = vars
    return message


def file_log(id: str, files: list[FileItem]) -> FileLog:
    return {"t": "file_log", "id": id, "files": files}


def reply(
    id: str,
    *,
    status: int | None = None,
    error: str | None = None,
    files: list[ListedFile] | None = None,
    missing: list[str] | None = None,
    results: list[UploadResult] | None = None,
    proc: ProcState | None = None,
    delivered: str | None = None,
) -> Reply:
    message: Reply = {"t": "reply", "id": id}
    if proc is not None:
        message["proc"] = proc
    if delivered is not None:
        message["delivered"] = delivered
    if status is not None:
        message["status"] = status
    if error is not None:
        message["error"] = error
    if files is not None:
        message["files"] = files
    if missing is not None:
        message["missing"] = missing
    if results is not None:
        message["results"] = results
    return message


def welcome(
    agent_id: str,
    bk_host_id: int,
    heartbeat: float,
    server_version: str,
    stats_every: float | None = None,
) -> Welcome:
    message: Welcome = {
        "t": "welcome",
        "agent_id": agent_id,
        "bk_host_id": bk_host_id,
        "heartbeat": heartbeat,
        "server_version": server_version,
    }
    if stats_every is not None:
        message["stats_every"] = stats_every
    return message


def host_load(cpu: float, mem: float, started: int) -> HostLoad:
    return {"cpu": cpu, "mem": mem, "started": started}


def stats(load: HostLoad) -> Stats:
    return {"t": "stats", "load": load}


def run(
    id: str,
    *,
    lang: int,
    script: str,
    args: list[str],
    account: str,
    timeout: int,
    env: dict[str, str],
    max_output: int,
    sensitive: bool = False,
    collect_vars: bool | None = None,
) -> ScriptRun:
    """A script task; ``sensitive`` goes on the wire only when true, ``collect_vars`` when given."""
    message: ScriptRun = {
        "t": "run",
        "id": id,
        "lang": lang,
        "script": script,
        "args": args,
        "account": account,
        "timeout": timeout,
        "env": env,
        "max_output": max_output,
    }
    if sensitive:
        message["sensitive"] = True
    if collect_vars is not None:
        message["collect_vars"] = collect_vars
    return message


# what an agent that predates ``script_b64`` runs instead of a script that is not UTF-8:
# it fails with a reason rather than run the script with its bytes changed
_OLD_AGENT_REFUSAL = (
    "jobfleet: this script is not UTF-8 text and this agent cannot run it byte for byte;"
    " upgrade the agent"
)
_OLD_AGENT_SCRIPT = {
    1: f"echo '{_OLD_AGENT_REFUSAL}' >&2\nexit 1\n",
    2: f"@echo {_OLD_AGENT_REFUSAL} 1>&2\r\n@exit /b 1\r\n",
    3: f'die "{_OLD_AGENT_REFUSAL}\\n";\n',
    4: f'import sys\nsys.exit("{_OLD_AGENT_REFUSAL}")\n',
    5: f"[Console]::Error.WriteLine('{_OLD_AGENT_REFUSAL}')\nexit 1\n",
}


def exact_script(message: dict[str, Any], lang: int | None = None) -> dict[str, Any]:
    """A run message (or part of one) fit for the wire, whatever bytes its script holds.

    Inside the server a script that is not UTF-8 is a string with lone surrogates (see
    ``domain.scripts``), which JSON cannot carry. Such a script travels as
    ``script_b64``; ``script`` then holds what an older agent, which knows only
    ``script``, runs instead: a few lines that fail with the reason. A UTF-8 script
    goes as it always did. ``lang`` is the language of a part that names none (a
    host's own script, merged into its step's message)."""
    script = message.get("script")
    if not isinstance(script, str) or is_unicode(script):
        return message
    lang = int(message.get("lang") or lang or 1)
    return {
        **message,
        "script": _OLD_AGENT_SCRIPT.get(lang, _OLD_AGENT_SCRIPT[1]),
        "script_b64": encode_script(script),
    }


def is_unicode(text: str) -> bool:
    """Whether ``text`` holds no byte that is not UTF-8 (so it can go anywhere text goes)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_script(script: str) -> str:
    """``script_b64`` of a script (lone surrogates standing for bytes that are not UTF-8)."""
    return base64.b64encode(script.encode("utf-8", errors="surrogateescape")).decode()


def script_bytes(message: ScriptRun) -> bytes:
    """The bytes a run message's script stands for: ``script_b64`` when the server sent it."""
    exact = message.get("script_b64")
    if isinstance(exact, str):
        return base64.b64decode(exact)
    return str(message["script"]).encode()


def download(
    id: str,
    *,
    items: list[DownloadItem],
    account: str,
    create_dirs: bool,
    speed_limit: int | None,
    timeout: int,
    max_size: int | None,
) -> DownloadRun:
    return {
        "t": "run",
        "id": id,
        "kind": "download",
        "items": items,
        "account": account,
        "create_dirs": create_dirs,
        "speed_limit": speed_limit,
        "timeout": timeout,
        "max_size": max_size,
    }


def kill(id: str, reason: str) -> Kill:
    return {"t": "kill", "id": id, "reason": reason}


def ack(acks: list[list[Any]]) -> Ack:
    return {"t": "ack", "acks": acks}


def file_list(id: str, patterns: list[str], account: str) -> FileList:
    """The request id goes last on the wire, as a request is numbered when it is sent."""
    return {"t": "file_list", "patterns": patterns, "account": account, "id": id}


def file_upload(
    id: str,
    items: list[UploadItem],
    account: str,
    speed_limit: int | None,
    max_size: int | None,
    seed_transfer: str | None = None,
) -> FileUpload:
    message: FileUpload = {
        "t": "file_upload",
        "items": items,
        "account": account,
        "speed_limit": speed_limit,
        "max_size": max_size,
    }  # type: ignore[typeddict-item]
    if seed_transfer:
        message["seed_transfer"] = seed_transfer
    message["id"] = id
    return message


def file_seed(
    id: str, items: list[UploadItem], account: str, max_size: int | None, seed: SeedOffer
) -> FileSeed:
    return {
        "t": "file_seed",
        "items": items,
        "account": account,
        "max_size": max_size,
        "seed": seed,
        "id": id,
    }


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


# How deep ``clean_texts`` goes into objects and lists: far past any message of the
# protocol, well short of Python's recursion limit
MAX_TEXT_DEPTH = 32


def clean_texts(value: Any, depth: int = 0) -> Any:
    """``value`` (JSON: objects, lists, strings, numbers) with every string ``clean_text``ed.

    Raises ``ValueError`` for objects and lists nested over ``MAX_TEXT_DEPTH`` deep: no
    message nests so, and a RecursionError would end whatever was reading it."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict | list) and depth >= MAX_TEXT_DEPTH:
        raise ValueError(f"nested over {MAX_TEXT_DEPTH} levels deep")
    if isinstance(value, dict):
        return {k: clean_texts(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_texts(v, depth + 1) for v in value]
    return value


# a server-side answer (never an agent's) that the node holding the agent asked could
# not hand it the request: the agent left meanwhile, and the node that asked asks
# again once it finds it
UNDELIVERED = "undelivered"


def undelivered_reply(request_id: str) -> dict[str, Any]:
    return {"t": REPLY, "id": request_id, UNDELIVERED: True}


# characters of why an agent's answer was refused that the failed request carries:
# the why quotes what the agent sent, which may be long
REFUSED_DETAIL = 200


def refused_reply(request_id: str, detail: str) -> dict[str, Any]:
    """The answer the request ``request_id`` gets in the name of an agent whose own
    answer to it the server refused: a failed request, with why. An honest agent answers
    once, so the side that asked would otherwise wait to its deadline."""
    return dict(
        reply(
            request_id,
            status=int(HostStatus.GSE_TASK_ERROR),
            error=f"the server refused the agent's answer ({detail[:REFUSED_DETAIL]})",
        )
    )


def clean_reply(message: Reply | dict[str, Any]) -> dict[str, Any]:
    """A ``reply`` whose text (errors, missing patterns, upload results, a process's message)
    any database holds, as a host's output. The listed files are left as sent: their
    names are checked where they are used (``is_file_name``), and one no file system
    holds fails its source, as a mapped name would name a file that is not there.
    Raises ``ValueError`` as ``clean_texts`` does."""
    return {k: v if k == "files" else clean_texts(v, 1) for k, v in message.items()}


def is_file_name(text: str) -> bool:
    """``text`` may name a file: it holds neither NUL (no file system's names do) nor a
    lone surrogate (which no UTF-8 name can hold)."""
    return "\x00" not in text and (text.isascii() or not _SURROGATE.search(text))


# C0, DEL and C1: what a terminal obeys rather than shows
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def clean_name(text: str) -> str:
    """An agent's host name (or OS name, version) as the inventory keeps it: no control
    characters at all. RFC 1123 names hold none and CMDB shows none; one in a hello is
    no part of the name, and an escape sequence there would act on whoever reads it."""
    return clean_text(_CONTROL.sub("", text))


def task_id(step_instance_id: int, execute_count: int, bk_host_id: int) -> str:
    return f"{step_instance_id}:{execute_count}:{bk_host_id}"


def parse_task_id(value: str) -> tuple[int, int, int]:
    step, count, host = value.split(":")
    return int(step), int(count), int(host)
