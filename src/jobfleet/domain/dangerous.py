"""Dangerous-statement rules (bk-job §8): regular expressions that warn about or block scripts.

A rule names the script languages it applies to and what a match does: ``SCAN`` only
warns, ``INTERCEPT`` refuses the whole request before anything reaches a host. A script
is checked line by line, 1-based; blank lines and whole-line comments of the script's
language are skipped (a commented-out ``rm -rf /`` runs nothing), and a rule reports at
most its first match on each line, as bk-job does.

``check_script`` reports a level per finding as bk-job does: its dangerous-rule checker
reports every match as fatal (3), whether the rule only scans or intercepts. Levels 1
(warning) and 2 (error) belong to bk-job's grammar and logic checkers, which jobfleet
does not have.

Matching is bounded in time. Any user's script meets an administrator's expressions, and
a careless one (``^(a|aa)+$``) backtracks for hours on a crafted line; Python's ``re``
holds the interpreter lock all that while, which would freeze the whole server. So rules
are matched with the ``regex`` module, whose searches take a timeout: a rule gets
``ScanLimits.rule`` seconds per script, a whole check ``ScanLimits.total`` (both per
MiB of script, at least once). A rule that runs out of time yields a ``timed_out``
finding at the line it stopped on: an intercept rule so cut short refuses the launch
(a script that cannot be checked is not run), a scan rule's is reported as a warning.
Expressions are still validated by ``re`` (the syntax and messages rules have always
had), then compiled by ``regex``. A new expression may not hold a POSIX class in a
bracket expression (``[[:space:]]``), which the two modules read differently.
"""

from __future__ import annotations

import importlib
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import regex

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScriptLanguage

MAX_EXPRESSION = 1024
MAX_DESCRIPTION = 1024
# a refusal quotes the offending line; a minified one-liner must not flood the message
MAX_QUOTED_LINE = 200
# a search first holds the interpreter lock at most this long (every normal search ends
# in microseconds); one that needs more goes on with the lock released
FIRST_TRY = 0.005


class RuleAction(IntEnum):
    SCAN = 1
    INTERCEPT = 2


class RuleStatus(IntEnum):
    DISABLED = 0
    ENABLED = 1


class CheckLevel(IntEnum):
    WARNING = 1
    ERROR = 2
    FATAL = 3


LEVEL_OF_ACTION = {RuleAction.SCAN: CheckLevel.FATAL, RuleAction.INTERCEPT: CheckLevel.FATAL}

LANGUAGES = frozenset(int(x) for x in ScriptLanguage)

# what starts a whole-line comment, after leading blanks
_HASH = re.compile(r"#")
_COMMENT: dict[int, re.Pattern[str]] = {
    ScriptLanguage.SHELL: _HASH,
    ScriptLanguage.PERL: _HASH,
    ScriptLanguage.PYTHON: _HASH,
    ScriptLanguage.POWERSHELL: _HASH,
    ScriptLanguage.BAT: re.compile(r"(?i:rem)(?:\s|$)|::|@(?i:rem)(?:\s|$)"),
    ScriptLanguage.SQL: re.compile(r"--|#"),
}


@dataclass(frozen=True)
class Rule:
    """An enabled rule, compiled once and matched against many scripts."""

    id: int
    pattern: regex.Pattern[str]
    languages: frozenset[int]
    action: RuleAction
    description: str
    # text every match contains ("" if none is known): a line without it is not searched
    needle: str = ""

    @property
    def label(self) -> str:
        return self.description or self.pattern.pattern


@dataclass(frozen=True)
class ScanLimits:
    """Seconds of matching per MiB of script (a smaller script counts as one MiB)."""

    # one rule, over every line of one script
    rule: float = 0.5
    # every rule of one check together
    total: float = 3.0

    def scaled(self, chars: int) -> tuple[float, float]:
        """(per rule, in all) for a script of ``chars`` characters."""
        mib = max(1, math.ceil(chars / (1024 * 1024)))
        return self.rule * mib, self.total * mib


@dataclass(frozen=True)
class Finding:
    line: int
    line_content: str
    match_content: str
    rule: Rule
    # the rule ran out of time at this line: nothing is known of this line and the rest
    timed_out: bool = False

    @property
    def level(self) -> CheckLevel:
        return LEVEL_OF_ACTION[self.rule.action]

    def view(self) -> dict[str, Any]:
        """One item of ``check_script``'s answer."""
        return {
            "line": self.line,
            "line_content": self.line_content,
            "match_content": self.match_content,
            "level": int(self.level),
            "description": self.rule.description,
            # jobfleet's addition: 1 scan (warn), 2 intercept (a launch is refused)
            "action": int(self.rule.action),
            # jobfleet's addition: the rule ran out of time here (match_content is empty)
            "timed_out": self.timed_out,
        }


# validation ----------------------------------------------------------------------
def compile_expression(expression: str, name: str = "expression") -> regex.Pattern[str]:
    """The pattern rules match with; the syntax is ``re``'s (and its error messages)."""
    if not expression.strip():
        raise JobError.missing(name)
    if len(expression) > MAX_EXPRESSION:
        raise JobError.invalid(name, f"longer than {MAX_EXPRESSION} characters")
    try:
        # ``re``'s warnings (``Possible nested set`` for ``[[:alpha:]]``) are about the
        # rule, not the server, and would be printed into the server's output at each save
        # and each load of the rule. A rule that only warns is taken as it always was.
        with warnings.catch_warnings(action="ignore"):
            re.compile(expression)
    except (re.error, RecursionError, OverflowError) as exc:
        raise JobError.invalid(name, f"not a valid regular expression: {exc}") from None
    try:
        # VERSION0: ``re``'s semantics, where the two modules differ
        return regex.compile(expression, regex.VERSION0)
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        raise JobError.invalid(
            name, f"not a regular expression jobfleet can match: {exc}"
        ) from None


# a POSIX class inside a bracket expression, as ``regex`` reads it: ``[:space:]``
_POSIX_CLASS = re.compile(r"\[:\^?\w+:\]")
# what to write instead, where ``re`` and ``regex`` agree
_POSIX_SPELLING = {
    "alnum": "[A-Za-z0-9]",
    "alpha": "[A-Za-z]",
    "blank": "[ \\t]",
    "digit": "\\d",
    "lower": "[a-z]",
    "space": "\\s",
    "upper": "[A-Z]",
    "word": "\\w",
    "xdigit": "[0-9A-Fa-f]",
}


def posix_class_of(expression: str) -> str | None:
    """The first POSIX class (``[:space:]``) inside a bracket expression, or None.

    ``regex``, which matches rules, reads ``[[:space:]]`` as the class of blanks; ``re``,
    whose syntax rules are checked with, as the characters ``[:space`` then ``]``: the
    same rule would mean two things. Escapes are skipped, and a bracket expression runs
    as ``re`` reads it (a ``]`` first in it is a character).
    """
    i, n = 0, len(expression)
    while i < n:
        char = expression[i]
        if char == "\\":
            i += 2
            continue
        if char != "[":
            i += 1
            continue
        i += 1
        if i < n and expression[i] == "^":
            i += 1
        if i < n and expression[i] == "]":
            i += 1
        while i < n and expression[i] != "]":
            if expression[i] == "\\":
                i += 2
                continue
            found = _POSIX_CLASS.match(expression, i)
            if found:
                return found.group(0)
            i += 1
        i += 1
    return None


def check_posix_classes(expression: str, name: str = "expression") -> None:
    """Refuse (1241010) a new expression with a POSIX class in a bracket expression.

    Rules already stored with one are kept and matched as ``regex`` reads them."""
    construct = posix_class_of(expression)
    if construct is None:
        return
    instead = _POSIX_SPELLING.get(construct.strip("[:]").lstrip("^"))
    hint = f" (for {construct} write {instead})" if instead else ""
    raise JobError.invalid(
        name,
        f"the POSIX class {construct} inside a bracket expression is not supported: the "
        "rule checker reads it as plain characters while scripts are matched with it as "
        f"a class; write the characters or an escape such as \\s, \\d, \\w instead{hint}",
    )


# lines a careless expression backtracks on for ever: runs of one character, then a
# character that makes the run fail to match
_PROBE_RUN = 64
# CPU seconds of this thread, not seconds of the clock: a loaded server must not take a
# usual expression for one that backtracks because its thread waited for a core
_PROBE_TIME = 0.2
_PROBES_TIME = 1.0
# a search cut off by the clock before it had used its CPU time is tried again with twice
# the time, this many times in all
_PROBE_TRIES = 5


def _probes(expression: str) -> list[str]:
    chars = dict.fromkeys("a1 x-/.=_\t")
    chars.update(dict.fromkeys(c for c in expression if c.isalnum()))
    runs = [c * _PROBE_RUN for c in list(chars)[:24]]
    runs += ["a " * (_PROBE_RUN // 2), "a1" * (_PROBE_RUN // 2)]
    return [run + end for run in runs for end in ("!", "\x00")]


def _search_time(pattern: regex.Pattern[str], probe: str, budget: float) -> float | None:
    """The CPU seconds one search of ``probe`` took, or None past ``budget`` of them."""
    wall = budget
    for _ in range(_PROBE_TRIES):
        start = time.thread_time()
        try:
            pattern.search(probe, timeout=wall, concurrent=True)
        except TimeoutError:
            # most of the time it had went into the search: it backtracks
            if time.thread_time() - start >= budget * 0.8:
                return None
            wall *= 2
            continue
        return time.thread_time() - start
    return None


def probe_expression(pattern: regex.Pattern[str], name: str = "expression") -> None:
    """Refuse (1241010) an expression that backtracks for ever on a simple crafted line.

    Cheap (every probe of a usual expression ends in microseconds), and it refuses only
    an expression that spent 200 ms of CPU on one line of 65 characters (or a second on
    all of them), but not complete: matching a script is bounded in time whatever this
    lets through. Searches release the interpreter lock: run it on a thread.
    """
    spent = 0.0
    for probe in _probes(pattern.pattern):
        budget = min(_PROBE_TIME, _PROBES_TIME - spent)
        took = _search_time(pattern, probe, budget) if budget > 0 else None
        if took is None:
            shown = probe[:8] + "…" + probe[-1:].encode("unicode_escape").decode()
            raise JobError.invalid(
                name,
                f"backtracks without end: matching it against a line of {len(probe)}"
                f" characters ({shown!r}) took more than {_PROBE_TIME} s; bound its"
                " nested repetitions (e.g. (a+)+ is a+)",
            )
        spent += took


def check_action(value: int, name: str = "action") -> RuleAction:
    try:
        return RuleAction(value)
    except ValueError:
        raise JobError.invalid(name, "must be 1 (scan) or 2 (intercept)") from None


def check_languages(values: Iterable[Any], name: str = "script_language_list") -> list[int]:
    """Sorted distinct language codes 1 to 6; anything else is refused."""
    out: set[int] = set()
    for value in values:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdecimal():
            number = int(value)
        if number is None or number not in LANGUAGES:
            raise JobError.invalid(
                name,
                f"{value!r} is not a script language "
                "(1 shell, 2 bat, 3 perl, 4 python, 5 powershell, 6 sql)",
            )
        out.add(number)
    return sorted(out)


def compile_rule(
    rule_id: int, expression: str, languages: Iterable[int], action: int, description: str
) -> Rule:
    return Rule(
        id=rule_id,
        pattern=compile_expression(expression),
        languages=frozenset(int(x) for x in languages),
        action=RuleAction(action),
        description=description,
        needle=needle_of(expression),
    )


def needle_of(expression: str) -> str:
    """The longest run of plain characters in the expression's top-level sequence: every
    match contains it, so a line without it cannot match (``rm\\s+-rf`` gives ``-rf``).

    "" when there is none or it is not plain text (a case-insensitive expression). Read
    from ``re``'s parser (the syntax rules are validated with), not part of its public
    API: any surprise there just means no needle. ``regex``, which matches, reads some
    of ``re``'s literal brackets and braces otherwise (``[[:space:]]`` is a POSIX class
    to it, ``{e<=1}`` a fuzzy match, ``(?x)a{ 1,2}`` a repeat): an expression with one
    anywhere has no needle either.
    """
    try:
        parser = importlib.import_module("re._parser")
        constants = importlib.import_module("re._constants")
        with warnings.catch_warnings(action="ignore"):
            parsed = parser.parse(expression)
        if parsed.state.flags & re.IGNORECASE:
            return ""
        literal = constants.LITERAL
        if _has_literal(parsed, {literal, constants.NOT_LITERAL}, _READ_OTHERWISE):
            return ""
        best, run = "", ""
        for op, arg in parsed:
            run = run + chr(arg) if op is literal else ""
            if len(run) > len(best):
                best = run
        return best
    except Exception:  # an optimisation: never a reason to refuse a rule
        return ""


_READ_OTHERWISE = frozenset(map(ord, "[]{}"))


def _has_literal(node: Any, ops: set[Any], codes: frozenset[int]) -> bool:
    """Whether ``re``'s parse tree ``node`` holds one of ``codes`` as a literal."""
    if isinstance(node, tuple) and len(node) == 2 and node[0] in ops:
        return isinstance(node[1], int) and node[1] in codes
    if isinstance(node, (tuple, list)) or hasattr(node, "data"):
        items = node.data if hasattr(node, "data") else node
        return any(_has_literal(item, ops, codes) for item in items)
    return False


# scanning ------------------------------------------------------------------------
def applicable(rules: Iterable[Rule], language: int) -> list[Rule]:
    return [r for r in rules if int(language) in r.languages]


def is_comment(line: str, language: int) -> bool:
    marker = _COMMENT.get(int(language))
    return marker is not None and marker.match(line.lstrip()) is not None


class NeedsThread(Exception):
    """An inline scan met a slow search: it is done again off the event loop."""


def scan(
    text: str,
    language: int,
    rules: Sequence[Rule],
    limits: ScanLimits = ScanLimits(),
    *,
    inline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Finding]:
    """Every rule's first match on each checked line, in line order then rule order.

    A rule that runs out of time (``limits``) gets a ``timed_out`` finding at the line it
    stopped on and is not tried on later lines; when the check as a whole runs out, every
    rule still going gets one. ``inline``: the caller holds the event loop, so a search
    needing more than ``FIRST_TRY`` or a scan needing more than ``inline`` seconds raises
    ``NeedsThread`` rather than go on.
    """
    # a rule whose needle the script lacks has nothing to search
    rules = [r for r in applicable(rules, language) if r.needle in text]
    if not rules:
        return []
    per_rule, total = limits.scaled(len(text))
    start = clock()
    deadline = start + total
    spent = dict.fromkeys((r.id for r in rules), 0.0)
    findings: list[Finding] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if not rules:
            break
        line = raw.removesuffix("\r")
        if not line.strip() or is_comment(line, language):
            continue
        late: list[Rule] = []
        now = clock()
        for rule in rules:
            if rule.needle not in line:
                continue
            if inline is not None and now - start > inline:
                raise NeedsThread
            begun = now
            try:
                match = _search(
                    rule.pattern,
                    line,
                    min(per_rule - spent[rule.id], deadline - begun),
                    inline is not None,
                )
            except TimeoutError:
                findings.append(Finding(number, line, "", rule, timed_out=True))
                late.append(rule)
                match = None
            now = clock()
            spent[rule.id] += now - begun
            if match is not None:
                findings.append(Finding(number, line, match.group(0), rule))
        if late:
            rules = [r for r in rules if r not in late]
    return findings


def _search(pattern: regex.Pattern[str], line: str, left: float, inline: bool) -> Any:
    """``pattern.search(line)`` within ``left`` seconds, else TimeoutError."""
    if left <= 0:
        raise TimeoutError
    # (string, pos, endpos, concurrent, partial, timeout): positional, as keywords cost
    # as much again as the search of a usual line
    try:
        # the usual search: too short to be worth releasing the interpreter lock
        return pattern.search(line, None, None, False, False, min(left, FIRST_TRY))
    except TimeoutError:
        if inline:
            raise NeedsThread from None
        if left <= FIRST_TRY:
            raise
    # a slow one: other threads (the event loop) run while it backtracks
    return pattern.search(line, None, None, True, False, left - FIRST_TRY)


def blocking(findings: Iterable[Finding]) -> Finding | None:
    """The first finding of an intercept rule: the one a refusal names."""
    return next((f for f in findings if f.rule.action == RuleAction.INTERCEPT), None)


def refusal(finding: Finding, where: str = "") -> JobError:
    line = finding.line_content.strip()
    if len(line) > MAX_QUOTED_LINE:
        line = line[:MAX_QUOTED_LINE] + "…"
    prefix = f"{where}: the script" if where else "The script"
    if finding.timed_out:
        return JobError(
            ErrorCode.DANGEROUS_SCRIPT_BLOCKED,
            f"{prefix} is refused: the dangerous-statement rule {finding.rule.label!r}"
            f" (id {finding.rule.id}) took too long to check it and gave up at line"
            f" {finding.line}, so the script could not be checked: {line}",
        )
    return JobError(
        ErrorCode.DANGEROUS_SCRIPT_BLOCKED,
        f"{prefix} is blocked by the dangerous-statement rule {finding.rule.label!r}"
        f" (id {finding.rule.id}) at line {finding.line}: {line}",
    )
