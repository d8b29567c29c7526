"""bk-job error codes and the one exception type the API maps to the envelope."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    OK = 0
    SERVICE_UNAVAILABLE = 1240001
    INTERNAL_ERROR = 1240002
    BAD_REQUEST = 1240003
    SERVICE_AUTH_FAIL = 1240005
    MISSING_PARAM = 1241001
    INVALID_PARAM = 1241002
    UNSUPPORTED_OPERATION = 1241003
    MISSING_PARAM_WITH_NAME = 1241004
    INVALID_PARAM_WITH_NAME = 1241005
    MISSING_OR_INVALID_PARAM = 1241007
    INVALID_PARAM_WITH_REASON = 1241010
    NOT_SUPPORTED = 1241011
    INVALID_PARAM_REASON = 1241012
    JOB_ALREADY_STARTED = 1241015
    PERMISSION_DENIED = 9900403
    USER_NOT_LOGIN = 1247001
    MISSING_USER = 1247002
    MISSING_APP_CODE = 1247004
    APP_FORBIDDEN = 1247403
    GSE_UNAVAILABLE = 1210001
    DYNAMIC_GROUP_NOT_FOUND = 1211003
    SCRIPT_NOT_EXIST = 1243001
    SCRIPT_NOT_IN_BIZ = 1243004
    JOB_PLAN_NOT_EXIST = 1243009
    TEMPLATE_NOT_EXIST = 1243026
    SCRIPT_VERSION_NOT_EXIST = 1243047
    BIZ_NOT_EXIST = 1243049
    SCOPE_NOT_EXIST = 1243051
    IP_NOT_IN_CMDB = 1243052
    HOST_ID_NOT_IN_CMDB = 1243053
    HOST_LIST_EMPTY = 1244001
    HOST_INVALID = 1244002
    ACCOUNT_NOT_EXIST = 1244003
    ACCOUNT_NO_PERMISSION = 1244004
    START_JOB_FAILED = 1244005
    JOB_INSTANCE_NOT_EXIST = 1244006
    STEP_INSTANCE_NOT_EXIST = 1244007
    HOST_VARIABLE_MISSING = 1244008
    HOST_VARIABLE_EMPTY = 1244009
    JOB_PLAN_ILLEGAL = 1244011
    JOB_PLAN_NOT_EXIST_EXECUTE = 1244012
    SCRIPT_VERSION_DISABLED = 1244014
    SCRIPT_NOT_EXECUTABLE = 1244018
    NOT_IN_CONFIRM_USERS = 1244016
    TASK_ALREADY_TERMINATING = 1244015
    DANGEROUS_SCRIPT_BLOCKED = 1244019
    FILE_TASKS_EXCEED = 1244021
    SCRIPT_TARGETS_EXCEED = 1244022
    STEP_TARGET_EMPTY = 1244028
    INVALID_ROLLING_EXPRESSION = 1244026
    ROLLING_BATCHES_EXCEED = 1244027
    RUNNING_JOB_QUOTA_SCOPE = 1244032
    RUNNING_JOB_QUOTA_APP = 1244033
    QUERY_TIME_RANGE_TOO_LARGE = 1244036
    CRON_NOT_EXIST = 1245001
    CRON_UPDATE_FAILED = 1245002
    CRON_EXISTS = 1245004
    CRON_TIME_PASSED = 1245006
    GET_LOG_FAILED = 1246001
    CREDENTIAL_NOT_EXIST = 1243048
    FILE_SOURCE_NOT_EXIST = 1260001
    FILE_SOURCE_NOT_FOUND_BY_CODE = 1260012
    FILE_SOURCE_CODE_EXISTS = 1260015
    FILE_SOURCE_NOT_IN_BIZ = 1260017
    THIRD_FILE_SOURCE_GET_OBJECT_FAILED = 1262006
    GSE_AGENT_NOT_FOUND = 1011003
    # jobfleet's own administration errors (outside the bk-job ranges)
    NOT_FOUND = 1249404
    CONFLICT = 1249409
    TOO_MANY_REQUESTS = 1249429


class JobError(Exception):
    """A failure the API turns into the ``{result, code, message}`` envelope."""

    def __init__(
        self,
        code: ErrorCode | int,
        message: str,
        *,
        http_status: int = 200,
        data: Any = None,
        permission: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.http_status = http_status
        self.data = data
        self.permission = permission

    @classmethod
    def missing(cls, name: str) -> JobError:
        return cls(ErrorCode.MISSING_PARAM_WITH_NAME, f"Missing parameter [{name}]")

    @classmethod
    def invalid(cls, name: str, reason: str | None = None) -> JobError:
        if reason:
            return cls(ErrorCode.INVALID_PARAM_WITH_REASON, f"Invalid parameter [{name}]: {reason}")
        return cls(ErrorCode.INVALID_PARAM_WITH_NAME, f"Invalid parameter [{name}]")
