"""Dangerous-statement rules are matched within a time bound: a rule that backtracks for
ever on a crafted line times out (an intercept rule refuses, a scan rule warns)."""

from __future__ import annotations

import itertools
import sys
import threading
import time

import pytest

from jobfleet.domain.dangerous import (
    Finding,
    NeedsThread,
    Rule,
    RuleAction,
    ScanLimits,
    blocking,
    compile_expression,
    compile_rule,
    needle_of,
    probe_expression,
    refusal,
    scan,
)
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScriptLanguage as L

# exponential in ``re`` and in ``regex`` alike; the "rm " prefix gets it past the probes
CATASTROPHIC = r"^rm (a|aa)+$"
CRAFTED = "rm " + "a" * 60 + "!"
RM = compile_rule(1, r"rm\s+-rf\s+/", [L.SHELL], RuleAction.INTERCEPT, "wipes the disk")
# a rule gets 0.1 s; the whole check room enough that a loaded machine, which can
# overshoot a timed-out search, does not run it out before the later rules
FAST = ScanLimits(rule=0.1, total=5.0)
# the machine is shared: bounds are loose, the unbounded match takes hours
LOOSE = 10.0


def slow(rule_id: int, action: RuleAction) -> Rule:
    return compile_rule(rule_id, CATASTROPHIC, [L.SHELL], action, "")


def timed_scan(
    text: str, rules: list[Rule], limits: ScanLimits = FAST
) -> tuple[list[Finding], float]:
    begun = time.monotonic()
    found = scan(text, L.SHELL, rules, limits)
    return found, time.monotonic() - begun


def test_an_intercept_rule_out_of_time_refuses_the_script() -> None:
    text = f"echo hi\n{CRAFTED}\nrm -rf /tmp/x\n"
    found, took = timed_scan(text, [slow(7, RuleAction.INTERCEPT), RM])
    assert took < LOOSE
    assert [(f.line, f.rule.id, f.timed_out) for f in found] == [(2, 7, True), (3, 1, False)]
    hit = blocking(found)
    assert hit is not None and hit.timed_out and hit.match_content == ""
    error = refusal(hit, "step 'one'")
    assert error.code == ErrorCode.DANGEROUS_SCRIPT_BLOCKED and error.code == 1244019
    assert "(id 7)" in error.message and "line 2" in error.message
    assert "took too long" in error.message and error.message.startswith("step 'one'")


def test_a_scan_rule_out_of_time_is_a_warning_not_dropped() -> None:
    found, took = timed_scan(f"{CRAFTED}\n{CRAFTED}\nrm -rf /\n", [slow(8, RuleAction.SCAN), RM])
    assert took < LOOSE
    # tried on no later line once out of time: one finding for it
    assert [(f.line, f.rule.id, f.timed_out) for f in found] == [(1, 8, True), (3, 1, False)]
    view = found[0].view()
    assert view["timed_out"] is True and view["match_content"] == "" and view["action"] == 1
    assert found[1].view()["timed_out"] is False
    hit = blocking(found)
    assert hit is not None and hit.rule.id == 1 and not hit.timed_out


def test_a_whole_check_is_bounded_however_many_rules() -> None:
    rules = [slow(i, RuleAction.SCAN) for i in range(1, 41)]
    # unbounded as a whole, 40 rules x 0.1 s would be 4 s
    spent = time.process_time()
    found, took = timed_scan(CRAFTED, rules, ScanLimits(rule=0.1, total=0.3))
    # CPU time, which other work on a loaded machine does not stretch: the bounded check
    # backtracks about 0.3 s, each of the 40 rules on its own 0.1 s would be 4 s
    assert time.process_time() - spent < 2.0, took
    assert [f.rule.id for f in found] == list(range(1, 41))
    assert all(f.timed_out and f.line == 1 for f in found)


def test_out_of_time_as_a_whole_every_rule_left_times_out() -> None:
    """With a clock that jumps a second per reading, the check runs out on line 2."""
    ticks = itertools.count(0.0, 1.0)
    rules = [RM, compile_rule(2, "echo", [L.SHELL], RuleAction.SCAN, "")]
    found = scan("echo a -rf\necho b -rf\necho rm -rf /\n", L.SHELL, rules,
                 ScanLimits(rule=100.0, total=3.5), clock=lambda: next(ticks))
    assert [(f.line, f.rule.id, f.timed_out) for f in found] == [
        (1, 2, False), (2, 1, True), (2, 2, True)]


def test_a_line_without_the_rules_needle_is_not_searched() -> None:
    assert [needle_of(e) for e in (r"rm\s+-rf\s+/", r"\breboot\b", CATASTROPHIC, r"(?x) r m",
                                   r"(?i)drop\s+table", r"a|b", r"(?i:rm) -rf", r"[r]m")] == [
        "-rf", "reboot", "rm ", "rm", "", "", " -rf", "rm"]
    # the crafted run without "rm ": the careless rule has nothing to search
    found, took = timed_scan("a" * 60 + "!\n" + "echo rm\n", [slow(1, RuleAction.INTERCEPT)])
    assert found == [] and took < 0.1 * LOOSE
    # a needle is only a shortcut: matches are those of the expression itself
    rules = [compile_rule(i, e, [L.SHELL], RuleAction.SCAN, "")
             for i, e in enumerate((r"rm\s+-rf\s+/", r"\brm\b", r"(?i)RM -RF"), start=1)]
    text = "rm -rf /\nRM -RF /\nrmdir x\nfoo -rf /\nxrm -rf /x\n"
    assert [(f.line, f.rule.id, f.match_content) for f in scan(text, L.SHELL, rules)] == [
        (1, 1, "rm -rf /"), (1, 2, "rm"), (1, 3, "rm -rf"), (2, 3, "RM -RF"),
        (5, 1, "rm -rf /"), (5, 3, "rm -rf")]


def test_limits_grow_with_the_script() -> None:
    limits = ScanLimits(rule=0.25, total=2.0)
    assert limits.scaled(10) == (0.25, 2.0)
    assert limits.scaled(1024 * 1024) == (0.25, 2.0)
    assert limits.scaled(3 * 1024 * 1024 + 1) == (1.0, 8.0)


def test_an_inline_scan_hands_a_slow_search_to_a_thread() -> None:
    begun = time.monotonic()
    with pytest.raises(NeedsThread):
        scan(CRAFTED, L.SHELL, [slow(1, RuleAction.INTERCEPT)], FAST, inline=0.02)
    assert time.monotonic() - begun < LOOSE
    # a usual script is checked inline as before
    assert [f.line for f in scan("rm -rf /\n", L.SHELL, [RM], FAST, inline=0.02)] == [1]


def test_lookarounds_and_backreferences_still_work() -> None:
    def rule(expression: str) -> Rule:
        return compile_rule(1, expression, [L.SHELL], RuleAction.INTERCEPT, "")

    cases = [
        (r"(?<=sudo )rm", "sudo rm -rf /", "rm"),
        (r"(?<!#)\breboot\b", "#reboot", None),
        (r"(?<!#)\breboot\b", "now reboot", "reboot"),
        (r"rm(?=\s+-rf)", "rm  -rf /", "rm"),
        (r"rm(?!\s+-i)\s+\S+", "rm -i x", None),
        (r"(\w+) \1", "rm rm -rf", "rm rm"),
        (r"(?P<cmd>kill) -9 (?P=cmd)", "kill -9 kill", "kill -9 kill"),
        (r"(?i)DROP\s+TABLE", "drop table users", "drop table"),
    ]
    for expression, line, matched in cases:
        found = scan(line, L.SHELL, [rule(expression)])
        assert [f.match_content for f in found] == ([matched] if matched else []), expression


def test_syntax_is_still_pythons_re() -> None:
    # ``regex`` knows \p{L}; rules keep the syntax (and the messages) they always had
    with pytest.raises(JobError) as info:
        compile_expression(r"\p{L}+")
    assert info.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
    assert "[expression]" in info.value.message and "bad escape" in info.value.message


def test_probes_refuse_an_expression_that_backtracks_for_ever() -> None:
    begun = time.monotonic()
    with pytest.raises(JobError) as info:
        probe_expression(compile_expression(r"^(a|aa)+$"))
    assert time.monotonic() - begun < LOOSE
    assert info.value.code == 1241010
    assert "[expression]" in info.value.message and "backtracks" in info.value.message
    for usual in (r"rm\s+-rf\s+/", r"\breboot\b", r"(\w+) \1", r"^\s*(sudo\s+)?shutdown",
                  r"(?i)drop\s+(table|database)", r"dd\s+if=.*of=/dev/sd[a-z]"):
        probe_expression(compile_expression(usual))


def test_a_usual_expression_is_taken_while_the_thread_waits_for_the_interpreter() -> None:
    """A loaded server: the probing thread waits long for the interpreter lock between
    searches. Only the time its searches take counts, not the time it waited."""
    stop = threading.Event()

    def hog() -> None:
        while not stop.is_set():
            pass

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    hogs = [threading.Thread(target=hog) for _ in range(2)]
    for thread in hogs:
        thread.start()
    try:
        probe_expression(compile_expression(r"rm\s+-rf"))
    finally:
        stop.set()
        for thread in hogs:
            thread.join()
        sys.setswitchinterval(switch)


@pytest.mark.parametrize(
    ("expression", "line"),
    [
        # a POSIX class, which the matcher honours: "]" is no literal of the match
        (r"rm[[:space:]]-rf", "rm -rf /"),
        (r"[[:space:]]shutdown", "  shutdown -h now"),
        # a fuzzy bound or, in verbose mode, a repeat with spaces: "{...}" is no text
        (r"(?:rm -rf){e<=1}/", "rm -rx/"),
        (r"mkfs{e<=1}", "mkf"),
        (r"(?x) reboot{ 0,1}", "reboo"),
    ],
)
def test_a_needle_never_skips_a_line_the_rule_matches(expression: str, line: str) -> None:
    rule = compile_rule(1, expression, [L.SHELL], RuleAction.INTERCEPT, "")
    assert rule.pattern.search(line) is not None
    assert rule.needle in line
    assert [f.line for f in scan(line + "\n", L.SHELL, [rule])] == [1]
