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
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScriptLanguage

MAX_EXPRESSION = 1024
MAX_DESCRIPTION = 1024
# a refusal quotes the offending line; a minified one-liner must not flood the message
MAX_QUOTED_LINE = 200


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
    pattern: re.Pattern[str]
    languages: frozenset[int]
    action: RuleAction
    description: str

    @property
    def label(self) -> str:
        return self.description or self.pattern.pattern


@dataclass(frozen=True)
class Finding:
    line: int
    line_content: str
    match_content: str
    rule: Rule

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
        }


# validation ----------------------------------------------------------------------
def compile_expression(expression: str, name: str = "expression") -> re.Pattern[str]:
    if not expression.strip():
        raise JobError.missing(name)
    if len(expression) > MAX_EXPRESSION:
        raise JobError.invalid(name, f"longer than {MAX_EXPRESSION} characters")
    try:
        return re.compile(expression)
    except (re.error, RecursionError, OverflowError) as exc:
        raise JobError.invalid(name, f"not a valid regular expression: {exc}") from None


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
    )


# scanning ------------------------------------------------------------------------
def applicable(rules: Iterable[Rule], language: int) -> list[Rule]:
    return [r for r in rules if int(language) in r.languages]


def is_comment(line: str, language: int) -> bool:
    marker = _COMMENT.get(int(language))
    return marker is not None and marker.match(line.lstrip()) is not None


def scan(text: str, language: int, rules: Sequence[Rule]) -> list[Finding]:
    """Every rule's first match on each checked line, in line order then rule order."""
    rules = applicable(rules, language)
    if not rules:
        return []
    findings: list[Finding] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip() or is_comment(line, language):
            continue
        for rule in rules:
            match = rule.pattern.search(line)
            if match is not None:
                findings.append(Finding(number, line, match.group(0), rule))
    return findings


def blocking(findings: Iterable[Finding]) -> Finding | None:
    """The first finding of an intercept rule: the one a refusal names."""
    return next((f for f in findings if f.rule.action == RuleAction.INTERCEPT), None)


def refusal(finding: Finding, where: str = "") -> JobError:
    line = finding.line_content.strip()
    if len(line) > MAX_QUOTED_LINE:
        line = line[:MAX_QUOTED_LINE] + "…"
    prefix = f"{where}: the script" if where else "The script"
    return JobError(
        ErrorCode.DANGEROUS_SCRIPT_BLOCKED,
        f"{prefix} is blocked by the dangerous-statement rule {finding.rule.label!r}"
        f" (id {finding.rule.id}) at line {finding.line}: {line}",
    )
