"""Dangerous-statement rules: compiling, scanning a script per language, refusing."""

from __future__ import annotations

import re
import warnings

import pytest

from jobfleet.domain.dangerous import (
    CheckLevel,
    Finding,
    RuleAction,
    blocking,
    check_action,
    check_languages,
    compile_expression,
    compile_rule,
    is_comment,
    posix_class_of,
    refusal,
    scan,
)
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScriptLanguage as L

RM = compile_rule(1, r"rm\s+-rf\s+/", [L.SHELL], RuleAction.INTERCEPT, "wipes the disk")
REBOOT = compile_rule(2, r"\breboot\b", [L.SHELL, L.PYTHON], RuleAction.SCAN, "reboots")
SHUTIL = compile_rule(3, r"shutil\.rmtree", [L.PYTHON], RuleAction.INTERCEPT, "")


def code_of(call: object) -> int:
    with pytest.raises(JobError) as info:
        call()  # type: ignore[operator]
    return info.value.code


def test_lines_are_one_based_and_report_the_matched_text() -> None:
    script = "#!/bin/bash\necho start\n  rm -rf /var/tmp\nreboot now\n"
    found = scan(script, L.SHELL, [RM, REBOOT])
    assert [f.view() for f in found] == [
        {"line": 3, "line_content": "  rm -rf /var/tmp", "match_content": "rm -rf /",
         "level": 3, "description": "wipes the disk", "action": 2, "timed_out": False},
        {"line": 4, "line_content": "reboot now", "match_content": "reboot",
         "level": 3, "description": "reboots", "action": 1, "timed_out": False},
    ]


def test_scan_warns_and_intercept_is_fatal() -> None:
    assert Finding(1, "x", "x", REBOOT).level == CheckLevel.FATAL  # as bk-job: every match
    assert Finding(1, "x", "x", RM).level == CheckLevel.FATAL


def test_comments_and_blank_lines_are_skipped_per_language() -> None:
    shell = "# rm -rf /\n\n   # reboot\necho ok # reboot\n"
    assert [f.line for f in scan(shell, L.SHELL, [RM, REBOOT])] == [4]
    bat_rule = compile_rule(9, "format", [L.BAT], RuleAction.INTERCEPT, "")
    bat = "REM format c:\r\n:: format c:\r\n@rem format\r\nremark format\r\nformat c:\r\n"
    found = scan(bat, L.BAT, [bat_rule])
    assert [(f.line, f.line_content) for f in found] == [(4, "remark format"), (5, "format c:")]
    assert is_comment("  -- drop table", L.SQL)
    assert not is_comment("-- not a comment in shell", L.SHELL)


def test_rules_apply_only_to_their_languages() -> None:
    script = "import shutil\nshutil.rmtree('/')\nos.system('reboot')\n"
    assert [f.rule.id for f in scan(script, L.PYTHON, [RM, REBOOT, SHUTIL])] == [3, 2]
    assert scan(script, L.SHELL, [SHUTIL]) == []
    assert scan("rm -rf /", L.PERL, [RM]) == []


def test_one_finding_per_rule_and_line_in_line_order() -> None:
    rule = compile_rule(4, "rm", [L.SHELL], RuleAction.SCAN, "")
    found = scan("rm a; rm b\necho\nrm c", L.SHELL, [rule, REBOOT])
    assert [(f.line, f.match_content) for f in found] == [(1, "rm"), (3, "rm")]


def test_the_first_intercept_finding_blocks() -> None:
    found = scan("reboot\nrm -rf /\n", L.SHELL, [REBOOT, RM])
    hit = blocking(found)
    assert hit is not None and hit.rule is RM
    assert blocking(scan("reboot\n", L.SHELL, [REBOOT, RM])) is None
    error = refusal(hit, "step 'deploy'")
    assert error.code == ErrorCode.DANGEROUS_SCRIPT_BLOCKED == 1244019
    assert "'wipes the disk'" in error.message and "line 2" in error.message
    assert error.message.startswith("step 'deploy': ")
    # a rule without a description is named by its expression
    unnamed = refusal(scan("shutil.rmtree(x)", L.PYTHON, [SHUTIL])[0])
    assert r"'shutil\\.rmtree'" in unnamed.message


def test_a_long_line_is_cut_in_the_message() -> None:
    hit = scan("rm -rf / " + "x" * 5000, L.SHELL, [RM])[0]
    assert len(refusal(hit).message) < 400
    assert len(hit.line_content) > 5000  # check_script still shows the whole line


def test_validation() -> None:
    assert compile_expression(r"rm\s").pattern == r"rm\s"
    assert code_of(lambda: compile_expression("rm (")) == ErrorCode.INVALID_PARAM_WITH_REASON
    assert code_of(lambda: compile_expression("  ")) == ErrorCode.MISSING_PARAM_WITH_NAME
    assert code_of(lambda: compile_expression("a" * 1025)) == ErrorCode.INVALID_PARAM_WITH_REASON
    assert check_languages([4, "1", 1]) == [1, 4]
    for bad in ([0], [7], ["x"], [True], [1.5], [None]):
        assert code_of(lambda bad=bad: check_languages(bad)) == 1241010
    assert check_action(2) == RuleAction.INTERCEPT
    assert code_of(lambda: check_action(3)) == 1241010


def test_crlf_and_no_trailing_newline() -> None:
    found = scan("echo\r\nreboot\r\n", L.SHELL, [REBOOT])
    assert [(f.line, f.line_content) for f in found] == [(2, "reboot")]
    assert scan("", L.SHELL, [REBOOT]) == []


@pytest.mark.parametrize(("expression", "construct"), [
    (r"rm[[:space:]]+-rf", "[:space:]"),
    (r"x[a[:digit:]]", "[:digit:]"),
    (r"[^[:^alpha:]_]", "[:^alpha:]"),
    (r"[]x[:word:]]", "[:word:]"),
    (r"\[[:space:]\]", None),
    (r"[:space:]", None),
    (r"[\[:space:]]", None),
    (r"[]:alpha:]", None),
    ("trailing\\", None),
])
def test_posix_class_of(expression: str, construct: str | None) -> None:
    assert posix_class_of(expression) == construct


@pytest.mark.parametrize("expression", [r"wipe[[:space:]]+now", r"[[a]b]", r"x[a&&b]", r"[a~~b]y"])
def test_an_expression_python_warns_about_is_taken_without_a_warning(expression: str) -> None:
    """``re`` warns about some expressions (``Possible nested set``); a rule that only
    warns is compiled as before, and nothing is printed into the server's output."""
    re.purge()  # ``re`` warns only when it compiles, not when it finds the pattern cached
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rule = compile_rule(9, expression, [L.SHELL], RuleAction.SCAN, "")
        assert compile_expression(expression).pattern == expression
    assert rule.pattern.pattern == expression
