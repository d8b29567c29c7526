import base64

import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.scripts import check_language, check_timeout, decode_base64, split_params


def enc(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_decode_base64_round_trip_and_whitespace() -> None:
    assert decode_base64(enc("echo hi\n"), "script_content", 100) == "echo hi\n"
    wrapped = enc("x" * 100)
    assert decode_base64(wrapped[:40] + "\n" + wrapped[40:], "script_content", 1000) == "x" * 100


@pytest.mark.parametrize(("value", "code"), [
    ("@@@", ErrorCode.INVALID_PARAM_WITH_NAME),
    (enc("x" * 101), ErrorCode.INVALID_PARAM_WITH_REASON),
    ("A" * 10_000, ErrorCode.INVALID_PARAM_WITH_REASON),
])
def test_decode_base64_rejects(value: str, code: ErrorCode) -> None:
    with pytest.raises(JobError) as err:
        decode_base64(value, "script_param", 100)
    assert err.value.code == code and "script_param" in err.value.message


def test_split_params_like_a_shell() -> None:
    assert split_params("--a=1 --b=x") == ["--a=1", "--b=x"]
    assert split_params("-m 'two words'\n--c \"q\"") == ["-m", "two words", "--c", "q"]
    with pytest.raises(JobError):
        split_params("'unbalanced")


def test_language_and_timeout_rules() -> None:
    assert check_language(4) == 4
    for bad in (0, 7, 6):
        with pytest.raises(JobError):
            check_language(bad)
    with pytest.raises(JobError) as err:
        check_language(None)
    assert err.value.code == ErrorCode.MISSING_PARAM_WITH_NAME
    assert check_timeout(None) == 7200
    assert check_timeout(259200) == 259200
    for bad in (0, 259201, -5):
        with pytest.raises(JobError) as err:
            check_timeout(bad)
        assert err.value.code == ErrorCode.BAD_REQUEST
