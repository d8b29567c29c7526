"""How long get_job_plan_detail spends finding which variables a plan's steps use.

A plan of ``--steps`` steps that all run one stored script of ``--mb`` MB, with
``--vars`` variables none of the script names (the worst case: every text is read to
its end). "before" is the earlier way, one search per variable over every step's copy
of the script; "after" is ``jobfleet.api.job_plans.used_names`` over each script once.

    flock /work/bench.lock .venv/bin/python bench/plan_detail_used.py
"""

from __future__ import annotations

import argparse
import re
import time

from jobfleet.api.job_plans import used_names


def before(names: list[str], texts: str) -> set[str]:
    return {
        n for n in names
        if re.search(rf"\$(?:\{{{re.escape(n)}\}}|{re.escape(n)}\b)", texts) is not None
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--vars", type=int, default=50)
    parser.add_argument("--mb", type=int, default=16)
    args = parser.parse_args()
    line = "echo hello world $HOME ${PATH}\n"
    script = (line * (args.mb * 1_000_000 // len(line) + 1))[: args.mb * 1_000_000]
    names = [f"var_{i}" for i in range(args.vars)]
    started = time.perf_counter()
    old = before(names, "\n".join([script] * args.steps))
    old_s = time.perf_counter() - started
    started = time.perf_counter()
    new = used_names(names, [script])
    new_s = time.perf_counter() - started
    assert old == new == set()
    print(f"steps={args.steps} vars={args.vars} mb={args.mb} "
          f"before={old_s:.2f}s after={new_s:.2f}s")


if __name__ == "__main__":
    main()
