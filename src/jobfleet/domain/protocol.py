"""Messages between the server and its agents.

Both sides speak JSON objects over one WebSocket per agent. Each object has a
``t`` (type) key. A host task is named ``<step_instance_id>:<execute_count>:<bk_host_id>``;
the agent numbers the output of a task from 1 and ends it with a ``done`` message
whose ``seq`` follows the last chunk. The server acknowledges what it has stored;
the agent keeps everything unacknowledged on disk and sends it again after a
reconnect, so the server ingests by (task, seq) and ignores repeats.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

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


class Output(TypedDict):
    t: Literal["out"]
    id: str
    seq: int
    data: str


class Done(TypedDict):
    t: Literal["done"]
    id: str
    seq: int
    status: int
    exit: int
    start: int
    end: int
    data: str
    tag: NotRequired[str]


class Ack(TypedDict):
    t: Literal["ack"]
    # [task id, highest seq stored]
    acks: list[list[Any]]


def task_id(step_instance_id: int, execute_count: int, bk_host_id: int) -> str:
    return f"{step_instance_id}:{execute_count}:{bk_host_id}"


def parse_task_id(value: str) -> tuple[int, int, int]:
    step, count, host = value.split(":")
    return int(step), int(count), int(host)
