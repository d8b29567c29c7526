"""Credentials and third-party file sources, checked without I/O."""

from __future__ import annotations

import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.file_sources import (
    check_access_params,
    credential_fits,
    credential_values,
    object_url,
)


def test_credential_values_by_type() -> None:
    assert credential_values("USERNAME_PASSWORD", {
        "credential_username": "u", "credential_password": "p", "credential_secret_key": "x",
    }) == {"credential_username": "u", "credential_password": "p"}
    assert credential_values("SECRET_KEY", {"credential_secret_key": "s"}) == {
        "credential_secret_key": "s"}
    for type_, params, code in (
        ("", {}, ErrorCode.INVALID_PARAM_WITH_REASON),
        ("TOKEN", {}, ErrorCode.INVALID_PARAM_WITH_REASON),
        ("APP_ID_SECRET_KEY", {"credential_access_key": "a"}, ErrorCode.MISSING_PARAM_WITH_NAME),
        ("PASSWORD", {"credential_password": 5}, ErrorCode.MISSING_PARAM_WITH_NAME),
    ):
        with pytest.raises(JobError) as err:
            credential_values(type_, params)
        assert err.value.code == code


def test_access_params_and_urls() -> None:
    s3 = check_access_params("S3", {"endpoint_url": "http://127.0.0.1:9000/"})
    assert s3 == {"endpoint_url": "http://127.0.0.1:9000", "region": "us-east-1"}
    assert object_url("S3", s3, "", "releases/v1/a b.txt") == \
        "http://127.0.0.1:9000/releases/v1/a%20b.txt"
    http = check_access_params("HTTP", {"base_url": "http://127.0.0.1:8081/generic"})
    assert object_url("HTTP", http, "app/", "x.tgz") == "http://127.0.0.1:8081/generic/app/x.tgz"
    for bad in ("../etc/passwd", "a/../../b", "", "releases"):
        with pytest.raises(JobError):
            object_url("S3", s3, "", bad)
    for raw in ({}, {"base_url": "ftp://127.0.0.1"}, {"base_url": "http://u:p@127.0.0.1"},
                {"base_url": "http://127.0.0.1/?q=1"}):
        with pytest.raises(JobError):
            check_access_params("HTTP", raw)
    assert credential_fits("S3", "APP_ID_SECRET_KEY")
    assert not credential_fits("S3", "PASSWORD")
    assert credential_fits("HTTP", "USERNAME_PASSWORD")
    assert not credential_fits("HTTP", "APP_ID_SECRET_KEY")


def test_bk_job_source_type_codes() -> None:
    cos = check_access_params("TENCENT_CLOUD_COS", {"region": "ap-guangzhou"})
    assert cos == {"endpoint_url": "https://cos.ap-guangzhou.myqcloud.com",
                   "region": "ap-guangzhou"}
    assert object_url("TENCENT_CLOUD_COS", cos, "", "pkgs-1250000000/v1/a.tgz") == \
        "https://cos.ap-guangzhou.myqcloud.com/pkgs-1250000000/v1/a.tgz"
    with pytest.raises(JobError):
        check_access_params("TENCENT_CLOUD_COS", {})
    assert credential_fits("TENCENT_CLOUD_COS", "APP_ID_SECRET_KEY")
    assert not credential_fits("TENCENT_CLOUD_COS", "USERNAME_PASSWORD")
    repo = check_access_params("BLUEKING_ARTIFACTORY", {"base_url": "http://127.0.0.1:8082/"})
    assert object_url("BLUEKING_ARTIFACTORY", repo, "", "proj/generic-local/v1/a b.tgz") == \
        "http://127.0.0.1:8082/generic/proj/generic-local/v1/a%20b.tgz"
    with pytest.raises(JobError):
        object_url("BLUEKING_ARTIFACTORY", repo, "", "proj/only")
    assert credential_fits("BLUEKING_ARTIFACTORY", "USERNAME_PASSWORD")
    assert credential_fits("BLUEKING_ARTIFACTORY", "SECRET_KEY")
