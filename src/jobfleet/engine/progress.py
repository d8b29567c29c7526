"""How recently each job driver of this node showed it is moving.

A lease is renewed by the node, not by its drivers: a driver stuck on an await that
never completes would otherwise keep its job leased, and unfinished, for ever. The
driver's waits show their turns here (``touch``, at least every ``reconcile_interval``);
a wait bounded by a deadline of its own (a file step's sources) says how long it may
take (``expect``). The lease keeper gives up the lease of a job whose driver showed
nothing for ``driver_stall`` seconds past both (engine/leases.py).
"""

from __future__ import annotations

import time


class Progress:
    def __init__(self) -> None:
        self._last: dict[int, float] = {}
        self._until: dict[int, float] = {}

    def touch(self, job_id: int) -> None:
        self._last[job_id] = time.monotonic()

    def step(self, job_id: int) -> None:
        """The driver begins a step: a turn, and the end of what an earlier step expected
        (a file step's timeout of a day must not hide a later step's driver stuck)."""
        self._last[job_id] = time.monotonic()
        self._until.pop(job_id, None)

    def expect(self, job_id: int, seconds: float) -> None:
        """The driver may show nothing for ``seconds`` from now and still be well. A
        shorter wait within the step (a staggered rollout's pause, in a file step that
        expects its whole timeout) leaves the longer expectation as it is."""
        now = time.monotonic()
        self._last[job_id] = now
        self._until[job_id] = max(self._until.get(job_id, 0.0), now + max(0.0, seconds))

    def forget(self, job_id: int) -> None:
        self._last.pop(job_id, None)
        self._until.pop(job_id, None)

    def stalled(self, limit: float) -> dict[int, float]:
        """Jobs whose driver showed nothing for more than ``limit`` seconds past what it
        expected, with the seconds since it last did."""
        now = time.monotonic()
        out: dict[int, float] = {}
        for job_id, last in self._last.items():
            if now - max(last, self._until.get(job_id, 0.0)) > limit:
                out[job_id] = now - last
        return out
