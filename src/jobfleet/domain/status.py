"""Status and type enums, numbered exactly as the bk-job v3 wire API numbers them."""

from __future__ import annotations

from enum import IntEnum


class RunStatus(IntEnum):
    """Job and step run status (bk-job ``RunStatusEnum``)."""

    BLANK = 1
    RUNNING = 2
    SUCCESS = 3
    FAIL = 4
    SKIPPED = 5
    IGNORE_ERROR = 6
    WAITING_USER = 7
    TERMINATED = 8
    ABNORMAL_STATE = 9
    STOPPING = 10
    STOP_SUCCESS = 11
    CONFIRM_TERMINATED = 13
    ABANDONED = 14
    ROLLING_WAITING = 15

    @property
    def finished(self) -> bool:
        return self in FINISHED_RUN_STATUSES


FINISHED_RUN_STATUSES = frozenset(
    {
        RunStatus.SUCCESS,
        RunStatus.FAIL,
        RunStatus.SKIPPED,
        RunStatus.IGNORE_ERROR,
        RunStatus.TERMINATED,
        RunStatus.ABNORMAL_STATE,
        RunStatus.STOP_SUCCESS,
        RunStatus.CONFIRM_TERMINATED,
        RunStatus.ABANDONED,
    }
)


class HostStatus(IntEnum):
    """Per-host task status (bk-job ``ExecuteObjectTaskStatusEnum``)."""

    UNKNOWN_ERROR = 0
    AGENT_ERROR = 1
    HOST_NOT_EXIST = 2
    LAST_SUCCESS = 3
    WAITING = 5
    RUNNING = 7
    SUCCESS = 9
    FAILED = 11
    SUBMIT_FAILED = 12
    TASK_TIMEOUT = 13
    LOG_ERROR = 15
    GSE_SCRIPT_TIMEOUT = 16
    GSE_FILE_TIMEOUT = 17
    AGENT_NOT_INSTALLED = 18
    SCRIPT_FAILED = 101
    SCRIPT_TIMEOUT = 102
    SCRIPT_TERMINATE = 103
    SCRIPT_NOT_ZERO_EXIT_CODE = 104
    COPYFILE_FAILED = 202
    COPYFILE_SOURCE_FILE_NOT_EXIST = 203
    FILE_ERROR_UNCLASSIFIED = 301
    GSE_TIMEOUT = 303
    GSE_AGENT_ERROR = 310
    GSE_USER_ERROR = 311
    GSE_USER_PWD_ERROR = 312
    GSE_FILE_ERROR = 320
    GSE_FILE_SIZE_EXCEED = 321
    GSE_FILE_TASK_ERROR = 329
    GSE_TASK_ERROR = 399
    GSE_TASK_TERMINATE_SUCCESS = 403
    GSE_TASK_TERMINATE_FAILED = 404
    UNKNOWN = 500

    @property
    def finished(self) -> bool:
        return self not in (HostStatus.WAITING, HostStatus.RUNNING)

    @property
    def succeeded(self) -> bool:
        return self in (HostStatus.SUCCESS, HostStatus.LAST_SUCCESS)


# the words every client shows for a job's or a step's status: the CLI, the console
# (in English) and the SDK's users
RUN_STATUS_DESC: dict[int, str] = {
    RunStatus.BLANK: "waiting",
    RunStatus.RUNNING: "running",
    RunStatus.SUCCESS: "success",
    RunStatus.FAIL: "failed",
    RunStatus.SKIPPED: "skipped",
    RunStatus.IGNORE_ERROR: "error ignored",
    RunStatus.WAITING_USER: "waiting for user",
    RunStatus.TERMINATED: "terminated",
    RunStatus.ABNORMAL_STATE: "abnormal",
    RunStatus.STOPPING: "stopping",
    RunStatus.STOP_SUCCESS: "force-terminated",
    RunStatus.CONFIRM_TERMINATED: "confirmation terminated",
    RunStatus.ABANDONED: "abandoned",
    RunStatus.ROLLING_WAITING: "waiting for next batch",
}

HOST_STATUS_DESC: dict[int, str] = {
    0: "Unknown error",
    1: "Agent abnormal",
    2: "Invalid execute object",
    3: "Succeeded last time",
    5: "Waiting",
    7: "Running",
    9: "Success",
    11: "Failed",
    12: "Task dispatch failed",
    13: "Task timeout",
    15: "Log error",
    16: "Script log timeout",
    17: "File log timeout",
    18: "Agent not installed",
    101: "Script failed",
    102: "Script timeout",
    103: "Script terminated",
    104: "Script exit code non-zero",
    202: "File transfer failed",
    203: "Source file not exist",
    301: "File task error",
    303: "File task timeout",
    310: "Agent abnormal",
    311: "User not exist",
    312: "User password wrong",
    320: "File fetch failed",
    321: "File size exceeds limit",
    329: "File transfer error",
    399: "Task execution error",
    403: "Force-terminate success",
    404: "Force-terminate failed",
    500: "Unknown status",
}


class GseErrorCode(IntEnum):
    """The ``error_code`` reported beside a host status."""

    DONE = 0
    RUNNING = 115
    TERMINATED = 126
    OTHER = -1


class StepType(IntEnum):
    SCRIPT = 1
    FILE = 2
    MANUAL_CONFIRM = 3
    SQL = 4


class TaskType(IntEnum):
    """Job instance type."""

    PLAN = 0
    FAST_SCRIPT = 1
    FAST_FILE = 2


class LaunchMode(IntEnum):
    WEB = 1
    API = 2
    CRON = 3


class ScriptLanguage(IntEnum):
    SHELL = 1
    BAT = 2
    PERL = 3
    PYTHON = 4
    POWERSHELL = 5
    SQL = 6


class ScopeType:
    BIZ = "biz"
    BIZ_SET = "biz_set"
    TENANT_SET = "tenant_set"
    ALL = (BIZ, BIZ_SET, TENANT_SET)


# a bare ``bk_biz_id`` in this range names a business set, as in bk-job; so sets take
# their ids from it and businesses never do
BIZ_SET_IDS = range(8_000_000, 10_000_000)


class JobOperation(IntEnum):
    TERMINATE = 1
    START = 2


class StepOperation(IntEnum):
    RETRY_FAIL_IP = 2
    IGNORE_ERROR = 3
    CONFIRM_CONTINUE = 6
    RETRY_ALL_IP = 8
    CONFIRM_TERMINATE = 9
    CONFIRM_RESTART = 10
    NEXT_STEP = 11
    SKIP = 12
    ROLLING_CONTINUE = 13


class LogType(IntEnum):
    SCRIPT = 1
    FILE = 2


class FileLogStatus(IntEnum):
    """Status of one file in a file step's log (bk-job §11.4)."""

    PULLING = 0
    WAITING = 1
    UPLOADING = 2
    DOWNLOADING = 3
    SUCCESS = 4
    FAILED = 5


class FileLogMode(IntEnum):
    UPLOAD = 0
    DOWNLOAD = 1


class AccountCategory(IntEnum):
    SYSTEM = 1
    DB = 2


class AccountType(IntEnum):
    LINUX = 1
    WINDOWS = 2
    MYSQL = 9
    ORACLE = 10
    DB2 = 11
    # not in bk-job, which numbers only the three above: jobfleet's own number
    POSTGRESQL = 12


class ScriptVersionStatus(IntEnum):
    DRAFT = 0
    ONLINE = 1
    OFFLINE = 2
    DISABLED = 3


class ScriptType(IntEnum):
    """Where a plan's script step takes its script from."""

    LOCAL = 1
    BIZ_SCRIPT = 2
    PUBLIC_SCRIPT = 3


class VariableType(IntEnum):
    """Global variable types (bk-job ``TaskVariableTypeEnum``)."""

    STRING = 1
    NAMESPACE = 2
    HOST_LIST = 3
    PASSWORD = 4
    ASSOC_ARRAY = 5
    INDEX_ARRAY = 6


class CronStatus(IntEnum):
    RUNNING = 1
    PAUSED = 2
