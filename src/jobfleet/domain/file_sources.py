"""Credentials and third-party file sources (bk-job ``file_type`` 3), checked without I/O.

A credential is one of bk-job's four types, each holding one or two values; the values
are sealed at rest and never shown again. A file source names where files come from and
the credential that opens it. jobfleet reads two kinds:

- ``S3``: an S3-compatible object store. ``access_params``: ``endpoint_url`` (required),
  ``region`` (default ``us-east-1``). A file is ``bucket/key``. Credential: access key
  and secret key (``APP_ID_SECRET_KEY``).
- ``HTTP``: an HTTP(S) artifact server. ``access_params``: ``base_url`` (required). A file
  is a path under it. Credential: user name and password (basic authentication), or a
  single secret or password (sent as a bearer token).

bk-job's own type codes (``FileSourceTypeEnum``) are read too, each as the kind it is:

- ``TENCENT_CLOUD_COS``: Tencent Cloud COS, S3-compatible. ``access_params``: ``region``
  (required) and ``endpoint_url`` (default ``https://cos.<region>.myqcloud.com``). A file
  is ``bucket/key``, fetched as from ``S3``.
- ``BLUEKING_ARTIFACTORY``: BlueKing Artifactory (bk-repo). ``access_params``:
  ``base_url``. A file is ``project/repo/path``, fetched over HTTP from bk-repo's generic
  download URL ``<base_url>/generic/<project>/<repo>/<path>``, with the same credentials
  as ``HTTP``.

``file_prefix`` (bk-job's) is put in front of every file named through the source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from jobfleet.domain.errors import ErrorCode, JobError

# bk-job CredentialTypeEnum: the request fields that fill value1 and value2 of each type
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    "APP_ID_SECRET_KEY": ("credential_access_key", "credential_secret_key"),
    "PASSWORD": ("credential_password",),
    "USERNAME_PASSWORD": ("credential_username", "credential_password"),
    "SECRET_KEY": ("credential_secret_key",),
}
S3 = "S3"
HTTP = "HTTP"
COS = "TENCENT_CLOUD_COS"
ARTIFACTORY = "BLUEKING_ARTIFACTORY"
SOURCE_TYPES = (S3, HTTP, COS, ARTIFACTORY)
# the kinds of source that speak the S3 protocol
S3_KINDS = frozenset({S3, COS})
COS_REGION = re.compile(r"[a-z0-9-]{1,64}")
MAX_VALUE = 4096
MAX_NAME = 255
CODE = re.compile(r"[A-Za-z0-9_-]{1,128}")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def credential_values(type_: str | None, params: Mapping[str, Any]) -> dict[str, str]:
    """The values of a credential of ``type_`` from a create/update request."""
    if not type_:
        raise JobError.invalid("type", "type cannot be null or blank")
    fields = CREDENTIAL_FIELDS.get(type_)
    if fields is None:
        raise JobError.invalid(
            "type", f"Unsupported type:{type_}, supported types:{','.join(CREDENTIAL_FIELDS)}"
        )
    values: dict[str, str] = {}
    for name in fields:
        value = params.get(name)
        if not isinstance(value, str) or not value:
            raise JobError.missing(name)
        if len(value) > MAX_VALUE:
            raise JobError.invalid(name, f"longer than {MAX_VALUE} characters")
        values[name] = value
    return values


def check_code(code: Any) -> str:
    if not isinstance(code, str) or not code.strip():
        raise JobError.missing("code")
    if not CODE.fullmatch(code):
        raise JobError.invalid("code", "letters, digits, '-' and '_', at most 128")
    return code


def check_source_type(type_: Any) -> str:
    if not isinstance(type_, str) or not type_.strip():
        raise JobError.missing("type")
    if type_ not in SOURCE_TYPES:
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_NAME,
            f"Invalid parameter [type]: file source types are {', '.join(SOURCE_TYPES)}",
        )
    return type_


def _base_url(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise JobError.missing(f"access_params.{name}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise JobError.invalid(
            f"access_params.{name}", "an http(s) URL with a host and no user info"
        )
    if parts.query or parts.fragment:
        raise JobError.invalid(f"access_params.{name}", "no query or fragment")
    return value.rstrip("/")


def check_access_params(type_: str, raw: Any) -> dict[str, str]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise JobError.invalid("access_params", "must be an object")
    if type_ in S3_KINDS:
        region = raw.get("region") or ("us-east-1" if type_ == S3 else None)
        if region is None:
            raise JobError.missing("access_params.region")
        if not isinstance(region, str) or not COS_REGION.fullmatch(region):
            raise JobError.invalid("access_params.region")
        endpoint = raw.get("endpoint_url")
        if type_ == COS and not endpoint:
            endpoint = f"https://cos.{region}.myqcloud.com"
        return {"endpoint_url": _base_url(endpoint, "endpoint_url"), "region": region}
    return {"base_url": _base_url(raw.get("base_url"), "base_url")}


def credential_fits(source_type: str, credential_type: str) -> bool:
    """Whether a source of ``source_type`` can use a credential of ``credential_type``."""
    if source_type in S3_KINDS:
        return credential_type == "APP_ID_SECRET_KEY"
    return credential_type in ("USERNAME_PASSWORD", "PASSWORD", "SECRET_KEY")


def object_url(source_type: str, access: Mapping[str, str], prefix: str, path: str) -> str:
    """The URL of one file of a source (path-style for S3: ``endpoint/bucket/key``)."""
    full = f"{prefix}{path}".lstrip("/")
    if not full or any(part in ("", ".", "..") for part in full.split("/")):
        raise JobError.invalid("file_source_list.file_list", f"{path!r} is not a file path")
    if source_type in S3_KINDS:
        bucket, _, key = full.partition("/")
        if not BUCKET.fullmatch(bucket) or not key:
            raise JobError.invalid(
                "file_source_list.file_list", f"{path!r} is not bucket/key"
            )
        return f"{access['endpoint_url']}/{bucket}/{quote(key)}"
    if source_type == ARTIFACTORY:
        if full.count("/") < 2:
            raise JobError.invalid(
                "file_source_list.file_list", f"{path!r} is not project/repo/path"
            )
        return f"{access['base_url']}/generic/{quote(full)}"
    return f"{access['base_url']}/{quote(full)}"


def file_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
