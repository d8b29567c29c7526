import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.targets import IpTarget, parse_target


def test_parse_target_dedupes_and_coerces() -> None:
    spec = parse_target({"host_id_list": [3, "3", 4],
                         "ip_list": [{"ip": "127.0.0.1", "bk_cloud_id": "0", "extra": True},
                                     {"ip": "127.0.0.1", "bk_cloud_id": 0},
                                     {"ip": "::1", "bk_cloud_id": 1}]})
    assert spec.host_ids == [3, 4]
    assert spec.ips == [IpTarget(0, "127.0.0.1"), IpTarget(1, "::1")]


@pytest.mark.parametrize(("raw", "code"), [
    (None, ErrorCode.MISSING_PARAM_WITH_NAME),
    ({}, ErrorCode.HOST_LIST_EMPTY),
    ({"ip_list": [], "host_id_list": []}, ErrorCode.HOST_LIST_EMPTY),
    ({"ip_list": [{"ip": "not-an-ip"}]}, ErrorCode.INVALID_PARAM_WITH_REASON),
    ({"host_id_list": ["x"]}, ErrorCode.INVALID_PARAM_WITH_NAME),
    ({"host_id_list": [-1]}, ErrorCode.INVALID_PARAM_WITH_NAME),
    ("text", ErrorCode.INVALID_PARAM_WITH_NAME),
])
def test_parse_target_rejects(raw: object, code: ErrorCode) -> None:
    with pytest.raises(JobError) as err:
        parse_target(raw)
    assert err.value.code == code
