"""The jobfleet Python client: bk-job v3 APIs by their bk-job names, sync and async.

>>> from jobfleet.sdk import JobClient
>>> with JobClient("http://127.0.0.1:8080", "my-app", "secret", "admin", biz=2) as client:
...     result = client.execute_and_wait("echo hello", hosts=["10.0.0.1"])
...     print(result.ok, [h.log for h in result.hosts])
"""

from __future__ import annotations

from jobfleet.sdk._async_client import AsyncJobClient
from jobfleet.sdk._client import JobClient
from jobfleet.sdk._errors import JobApiError, JobWaitTimeout
from jobfleet.sdk._models import Credentials, ExecutionResult, HostResult, JobProgress

__all__ = [
    "AsyncJobClient",
    "Credentials",
    "ExecutionResult",
    "HostResult",
    "JobApiError",
    "JobClient",
    "JobProgress",
    "JobWaitTimeout",
]
