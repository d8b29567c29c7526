"""What bounding dangerous-rule matching in time costs a usual script, and what it saves
on a crafted one, measured in the same run.

- usual: a shell script of ``--lines`` lines (mostly ``echo``/``cp``/``grep`` lines, one
  ``rm -rf /`` every 500) against ``--rules`` usual rules (``rm\\s+-rf\\s+/``, ``\\breboot\\b``,
  ``mkfs``, a lookbehind, a backreference, …), all applying to shell. Before: the loop
  jobfleet ran until now (``re``, no timeout), here as ``unbounded``; after:
  ``jobfleet.domain.dangerous.scan`` (``regex`` with timeouts), on the calling thread as
  on the event loop. Both must find the same matches. Floor: ``re``'s searches alone,
  every checked line by every rule, the lines split and chosen beforehand. A rule's
  "needle" (text every match holds) lets the new scan skip lines without it, so the same
  script is measured again with every rule's needle at the end of every line: there
  every search runs.
- crafted: ``rm aaa…a!`` (n a's) against ``^rm (a|aa)+$``: ``re`` for small n (the time
  grows ~1.6x per a; n = 60 would take ~1.6^28 times n = 32's), and ``scan`` for n = 60.

    .venv/bin/python bench/dangerous_rules.py [--lines 20000] [--rules 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable, Sequence

from jobfleet.domain.dangerous import (
    Rule,
    RuleAction,
    ScanLimits,
    applicable,
    compile_rule,
    is_comment,
    scan,
)
from jobfleet.domain.status import ScriptLanguage

USUAL = [
    r"rm\s+-rf\s+/",
    r"\breboot\b",
    r"mkfs(\.\w+)?\s",
    r"dd\s+if=.*of=/dev/sd[a-z]",
    r"(?<!#)\bshutdown\b",
    r"(\w+) \1 --force",
    r":\(\)\s*\{\s*:\|:&\s*\};:",
    r"chmod\s+-R\s+777\s+/",
    r"(?i)drop\s+(table|database)",
    r">\s*/dev/sd[a-z]",
    r"kill\s+-9\s+1\b",
    r"wget\s+\S+\s*\|\s*(ba)?sh",
]


def script(lines: int, tail: str = "") -> str:
    out = ["#!/bin/bash", "# deploys the app"]
    for i in range(lines):
        if i % 500 == 499:
            out.append(f"rm -rf /var/tmp/build-{i}")
        elif i % 3 == 0:
            out.append(f'echo "step {i}: copying the files of release {i * 7}"')
        elif i % 3 == 1:
            out.append(f"cp -a /srv/app/releases/{i}/conf /etc/app/conf.d/{i}.conf")
        else:
            out.append(f"grep -q 'ready' /var/log/app/{i}.log || sleep 1")
    return "".join(line + (tail if i > 1 else "") + "\n" for i, line in enumerate(out))


def unbounded(text: str, language: int, rules: Sequence[tuple[re.Pattern[str], Rule]]) -> int:
    """jobfleet's scan until now: ``re``, no time bound."""
    found = 0
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        if not line.strip() or is_comment(line, language):
            continue
        for pattern, _rule in rules:
            if pattern.search(line) is not None:
                found += 1
    return found


def floor(lines: Sequence[str], patterns: Sequence[re.Pattern[str]]) -> int:
    """The searches alone: ``re``, on the lines to check, split and chosen beforehand."""
    return sum(1 for pattern in patterns for line in lines if pattern.search(line))


def best(run: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        begun = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - begun)
    return statistics.median(times), result


def usual(name: str, text: str, rules: list[Rule],
          old: list[tuple[re.Pattern[str], Rule]], args: argparse.Namespace) -> None:
    shell = int(ScriptLanguage.SHELL)
    print(f"{name}: {args.lines} lines, {len(text) / 1024:.0f} KiB, {args.rules} rules,"
          f" median of {args.repeat}")
    checked = [line for line in text.split("\n")
               if line.strip() and not is_comment(line, shell)]
    t_floor, _ = best(lambda: floor(checked, [p for p, _ in old]), args.repeat)
    t_old, n_old = best(lambda: unbounded(text, shell, old), args.repeat)
    t_new, found = best(lambda: scan(text, shell, rules), args.repeat)
    assert isinstance(found, list) and len(found) == n_old, (len(found), n_old)
    assert not any(f.timed_out for f in found)
    per = args.lines * args.rules
    for label, took in (("floor (re, searches)", t_floor), ("before (re, unbounded)", t_old),
                        ("after (regex, bounded)", t_new)):
        print(f"  {label:24s} {took * 1000:8.1f} ms  {took / per * 1e9:6.0f} ns/line/rule")
    print(f"  matches: {n_old} before, {len(found)} after")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shell = int(ScriptLanguage.SHELL)
    rules = [compile_rule(i + 1, USUAL[i % len(USUAL)], [shell], RuleAction.INTERCEPT, "")
             for i in range(args.rules)]
    old = [(re.compile(r.pattern.pattern), r) for r in applicable(rules, shell)]
    # every line holding every rule's needle: no line is skipped, every search runs
    needles = " ".join(r.needle for r in rules)
    for name, text in (("usual", script(args.lines)),
                       ("needles on every line", script(args.lines, " " + needles))):
        usual(name, text, rules, old, args)

    crafted = r"^rm (a|aa)+$"
    pattern = re.compile(crafted)
    print("crafted: 'rm ' + 'a'*n + '!' against", crafted)
    for n in (20, 24, 28, 32):
        took, _ = best(lambda n=n: pattern.search("rm " + "a" * n + "!"), 1)
        print(f"  re, n={n:2d}: {took:8.3f} s")
    line = "rm " + "a" * 60 + "!"
    limits = ScanLimits()
    for count in (1, 12):
        many = [compile_rule(i, crafted, [shell], RuleAction.INTERCEPT, "")
                for i in range(1, count + 1)]
        took, res = best(lambda many=many: scan(line, shell, many, limits), 1)
        assert isinstance(res, list) and len(res) == count and all(f.timed_out for f in res)
        print(f"  scan, n=60, {count:2d} such rule(s), default limits {limits.rule} s per"
              f" rule, {limits.total} s per check: {took:6.3f} s")


if __name__ == "__main__":
    main()
