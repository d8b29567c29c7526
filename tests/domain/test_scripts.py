import base64
import codecs
from collections.abc import Callable

import pytest

from jobfleet.domain import scripts
from jobfleet.domain.dangerous import compile_rule, scan
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.scripts import (
    check_language,
    check_script_nul,
    check_timeout,
    decode_base64,
    decode_base64_script,
    encode_exact_base64,
    exact_bytes,
    exact_text,
    is_unicode,
    loaded_script,
    rule_texts,
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


# a PowerShell script as Windows saves it: CRLF line ends, a non-ASCII character
POWERSHELL = "# nettoyage é\r\nRemove-Item -Recurse C:\\\r\n"
MARKED = {
    "utf-8": b"\xef\xbb\xbf" + POWERSHELL.encode("utf-8"),
    "utf-16-le": b"\xff\xfe" + POWERSHELL.encode("utf-16-le"),
    "utf-16-be": b"\xfe\xff" + POWERSHELL.encode("utf-16-be"),
    "utf-32-le": b"\xff\xfe\x00\x00" + POWERSHELL.encode("utf-32-le"),
    "utf-32-be": b"\x00\x00\xfe\xff" + POWERSHELL.encode("utf-32-be"),
}


@pytest.mark.parametrize("encoding", sorted(MARKED))
def test_a_byte_order_mark_says_how_the_text_view_reads_a_script(encoding: str) -> None:
    text = exact_text(MARKED[encoding])
    assert shown_text(text) == POWERSHELL
    # the bytes still go as sent, and a step keeps the readable text
    assert exact_bytes(text) == MARKED[encoding]
    content, config = stored_script(text, None)
    assert loaded_script(content, config) == text
    if encoding != "utf-8":
        assert content == POWERSHELL and "\x00" not in content
    check_script_nul(text, "script_content")


@pytest.mark.parametrize("encoding", sorted(MARKED))
def test_a_rule_sees_a_command_in_a_script_with_a_byte_order_mark(encoding: str) -> None:
    rule = compile_rule(1, r"Remove-Item\s+-Recurse", [5], 2, "no recursive removal")
    anchored = compile_rule(2, r"^Remove-Item", [5], 2, "")
    found = [f for view in rule_texts(exact_text(MARKED[encoding]))
             for f in scan(view, 5, [rule, anchored])]
    assert [(f.line, f.rule.id) for f in found][:2] == [(2, 1), (2, 2)], found


def test_a_byte_order_mark_hides_no_command_from_a_shell_reading() -> None:
    """A shell knows no byte order mark: it runs the ASCII bytes after one, so the bytes
    as UTF-8 are matched too, not only the UTF-16 view a mark makes of them."""
    rule = compile_rule(1, r"rm\s+-rf\s+/", [1], 2, "")
    for raw in (b"\xff\xfe\nrm -rf /tmp/x\n", b"\xfe\xffrm -rf /\n",
                b"\xff\xfe\x00\x00\nrm -rf /\n",
                # bash drops NUL bytes: this runs rm, and reads as UTF-16 holding no NUL
                b"\xff\xfe\nr\x00m -rf /\n"):
        text = exact_text(raw)
        views = rule_texts(text)
        assert len(views) == 2 and "rm -rf /" not in views[0], views
        assert [f.line for v in views for f in scan(v, 1, [rule])], raw
    check_script_nul(exact_text(b"\xff\xfe\nr\x00m -rf /\n"), "script_content")
    assert rule_texts("rm -rf /\n") == ("rm -rf /\n",)
    assert rule_texts(exact_text(MARKED["utf-8"])) == (POWERSHELL,)


def test_utf16_without_a_byte_order_mark_is_shown_but_never_launched() -> None:
    """A BOM-less UTF-16 script reads as UTF-16 in the text view (the check shows what a
    rule would find), but a launch refuses it: without the mark nothing says how the
    host's interpreter will read it."""
    for encoding in ("utf-16-le", "utf-16-be"):
        text = exact_text(POWERSHELL.encode(encoding))
        assert shown_text(text) == POWERSHELL
        with pytest.raises(JobError) as err:
            check_script_nul(text, "script_content")
        assert err.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
        assert "byte order mark" in err.value.message
    # NUL bytes that are not UTF-16 are shown as they are, and refused alike
    assert shown_text("a\x00\x00b") == "a\x00\x00b"
    with pytest.raises(JobError):
        check_script_nul("echo a\x00b\n", "script_content")
    # a marked script whose text holds a NUL character has nowhere to be kept
    with pytest.raises(JobError) as err:
        check_script_nul(exact_text(b"\xff\xfe" + "a\x00b".encode("utf-16-le")), "c")
    assert "NUL characters" in err.value.message


@pytest.mark.parametrize("raw", [
    codecs.BOM_UTF16_LE + "rm -rf /\r\n".encode("utf-16-le"),
    "echo \u4f60\u597d\n".encode("gbk"),
    "echo \u4f60\u597d\n".encode(),
    codecs.BOM_UTF8 + b"echo hi\n",
])
def test_a_launch_reads_its_script_once(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> None:
    """The NUL check, the rules and the job's stored form all come from one reading: none
    of them encodes or tests the whole script again (a script may be 16 MiB)."""
    text = exact_text(raw)
    read = scripts.read_script(text)
    expected = (rule_texts(text), stored_script(text, None))
    encoded: list[int] = []

    def counted(function: Callable[..., object]) -> Callable[..., object]:
        def wrapper(value: str, *args: object) -> object:
            encoded.append(len(value))
            return function(value, *args)
        return wrapper

    monkeypatch.setattr(scripts, "exact_bytes", counted(scripts.exact_bytes))
    monkeypatch.setattr(scripts, "is_unicode", counted(scripts.is_unicode))
    check_script_nul(read, "script_content")
    assert (rule_texts(read), stored_script(read, None)) == expected
    # at most the first characters, where a byte order mark would be
    assert all(n <= 4 for n in encoded), encoded
