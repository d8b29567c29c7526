"""The jobfleet Python client: bk-job v3 APIs by their bk-job names, sync and async.

>>> from jobfleet.sdk import JobClient
>>> with JobClient("http://127.0.0.1:8080", "my-app", "secret", "admin", biz=2) as client:
...     result = client.execute_and_wait("echo hello", hosts=["10.0.0.1"])
...     print(result.ok, [h.log for h in result.hosts])
...     copied = client.transfer_and_wait(["app.tar.gz"], hosts=["10.0.0.1"], target_path="/opt")
...     print(copied.ok, copied.bytes_done)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobfleet.domain.durations import parse_duration
    from jobfleet.domain.host_filters import condition_from_text
    from jobfleet.domain.paths import source_label
    from jobfleet.domain.status import (
        HOST_STATUS_DESC,
        RUN_STATUS_DESC,
        FileLogMode,
        FileLogStatus,
        HostStatus,
        RunStatus,
        ScriptLanguage,
        StepType,
    )
    from jobfleet.sdk._async_client import AsyncJobClient
    from jobfleet.sdk._client import JobClient
    from jobfleet.sdk._config import read_bootstrap_file, read_config_file
    from jobfleet.sdk._errors import (
        JobApiError,
        JobAuthError,
        JobBusyError,
        JobConfigError,
        JobConflictError,
        JobInvalidError,
        JobNotFoundError,
        JobPermissionError,
        JobWaitTimeout,
    )
    from jobfleet.sdk._flow import parse_host, target_server
    from jobfleet.sdk._models import (
        Credentials,
        ExecutionResult,
        FileLog,
        HostResult,
        JobProgress,
        Target,
        TransferProgress,
        TransferResult,
    )

# Each name is imported from its module on first use (PEP 562): a program that takes
# only the models or the sync client (the operator's CLI starting a command) does not
# pay for the async client, asyncio and the host-filter grammar.
_HOMES = {
    "parse_duration": "jobfleet.domain.durations",
    "condition_from_text": "jobfleet.domain.host_filters",
    "source_label": "jobfleet.domain.paths",
    **dict.fromkeys(
        (
            "HOST_STATUS_DESC",
            "RUN_STATUS_DESC",
            "FileLogMode",
            "FileLogStatus",
            "HostStatus",
            "RunStatus",
            "ScriptLanguage",
            "StepType",
        ),
        "jobfleet.domain.status",
    ),
    "AsyncJobClient": "jobfleet.sdk._async_client",
    "JobClient": "jobfleet.sdk._client",
    "read_bootstrap_file": "jobfleet.sdk._config",
    "read_config_file": "jobfleet.sdk._config",
    **dict.fromkeys(
        (
            "JobApiError",
            "JobAuthError",
            "JobBusyError",
            "JobConfigError",
            "JobConflictError",
            "JobInvalidError",
            "JobNotFoundError",
            "JobPermissionError",
            "JobWaitTimeout",
        ),
        "jobfleet.sdk._errors",
    ),
    "parse_host": "jobfleet.sdk._flow",
    "target_server": "jobfleet.sdk._flow",
    **dict.fromkeys(
        (
            "Credentials",
            "ExecutionResult",
            "FileLog",
            "HostResult",
            "JobProgress",
            "Target",
            "TransferProgress",
            "TransferResult",
        ),
        "jobfleet.sdk._models",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    # kept, so the next look-up is an ordinary attribute
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "HOST_STATUS_DESC",
    "RUN_STATUS_DESC",
    "AsyncJobClient",
    "Credentials",
    "ExecutionResult",
    "FileLog",
    "FileLogMode",
    "FileLogStatus",
    "HostResult",
    "HostStatus",
    "JobApiError",
    "JobAuthError",
    "JobBusyError",
    "JobClient",
    "JobConfigError",
    "JobConflictError",
    "JobInvalidError",
    "JobNotFoundError",
    "JobPermissionError",
    "JobProgress",
    "JobWaitTimeout",
    "RunStatus",
    "ScriptLanguage",
    "StepType",
    "Target",
    "TransferProgress",
    "TransferResult",
    "condition_from_text",
    "parse_duration",
    "parse_host",
    "read_bootstrap_file",
    "read_config_file",
    "source_label",
    "target_server",
]
