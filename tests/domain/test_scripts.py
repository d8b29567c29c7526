import base64

import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.scripts import (
    check_language,
    check_timeout,
    decode_base64,
    decode_base64_script,
    encode_exact_base64,
    exact_bytes,
    exact_text,
    is_unicode,
    loaded_script,
    shown_text,
    split_params,
    stored_script,
)


def enc(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_decode_base64_round_trip_and_whitespace() -> None:
    assert decode_base64(enc("echo hi\n"), "script_content", 100) == "echo hi\n"
    wrapped = enc("x" * 100)
    assert decode_base64(wrapped[:40] + "\n" + wrapped[40:], "script_content", 1000) == "x" * 100


def test_decode_base64_takes_what_bk_job_takes() -> None:
    """bk-job decodes with commons-codec, which takes base64 without its padding and in the
    URL-safe alphabet: callers that encode so (Go's RawStdEncoding, JavaScript's base64url)
    work against it."""
    for text in ("ab", "abcd", "a", "echo ~?>"):
        padded = enc(text)
        assert decode_base64(padded.rstrip("="), "script_param", 100) == text
        assert decode_base64(padded.replace("+", "-").replace("/", "_"), "script_param",
                             100) == text
    # bytes that only the URL-safe alphabet's two characters encode, unpadded
    assert exact_bytes(decode_base64_script("-_8", "script_content", 100)) == b"\xfb\xff"


@pytest.mark.parametrize(("value", "code"), [
    ("@@@", ErrorCode.INVALID_PARAM_WITH_NAME),
    # one character past a whole group carries no byte: not base64 in any alphabet
    ("QUJDR", ErrorCode.INVALID_PARAM_WITH_NAME),
    # padding inside the value
    ("QQ==QQ==", ErrorCode.INVALID_PARAM_WITH_NAME),
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


# a GBK "中文", a Latin-1 "é", a byte no encoding starts a character with, and UTF-8 "é"
MIXED = b"echo \xd6\xd0\xce\xc4 caf\xe9 \xff caf\xc3\xa9\n"


def test_a_script_of_any_encoding_decodes_losslessly() -> None:
    raw = base64.b64encode(MIXED).decode()
    text = decode_base64_script(raw, "script_content", 100)
    assert exact_bytes(text) == MIXED
    assert encode_exact_base64(text) == raw
    assert not is_unicode(text)
    # the text view keeps every ASCII byte and each UTF-8 character
    assert shown_text(text) == MIXED.decode("utf-8", "replace")
    assert "echo " in shown_text(text) and "café\n" in shown_text(text)
    assert shown_text("plain é") == "plain é" and is_unicode("plain é")


def test_a_text_field_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(JobError) as err:
        decode_base64(base64.b64encode(MIXED).decode(), "script_param", 100)
    assert err.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
    assert "[script_param]" in err.value.message
    assert "byte 0xd6 at offset 5" in err.value.message


def test_a_step_keeps_a_script_that_is_not_utf8_in_its_config() -> None:
    text = exact_text(MIXED)
    content, config = stored_script(text, {"script_type": 1})
    assert content == MIXED.decode("utf-8", "replace")
    assert config is not None and config["script_type"] == 1
    assert loaded_script(content, config) == text
    # a UTF-8 script is kept as it always was
    assert stored_script("echo é", {"a": 1}) == ("echo é", {"a": 1})
    assert loaded_script("echo é", {"a": 1}) == "echo é"
