"""Rate limits per source address: a token bucket for each address, in memory.

One node counts what reaches it; behind a load balancer each node keeps its own
buckets, so the limit a client sees is at most the per-node limit times the
number of nodes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from jobfleet.domain.errors import ErrorCode, JobError

# past this many addresses, buckets that are full again are forgotten first
MAX_ADDRESSES = 100_000


class Throttle:
    """``burst`` attempts at once, then ``rate`` per second; ``rate <= 0`` turns it off."""

    def __init__(
        self,
        what: str,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.what = what
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.max_addresses = max_addresses
        # address -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _tokens(self, address: str, now: float) -> float:
        tokens, then = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - then) * self.rate)

    def exhausted(self, address: str) -> bool:
        """Whether the next attempt from ``address`` would be over the limit."""
        return self.enabled and self._tokens(address, self.clock()) < 1.0

    def take(self, address: str) -> bool:
        """Count one attempt; False when ``address`` is over the limit (nothing is counted)."""
        if not self.enabled:
            return True
        now = self.clock()
        tokens = self._tokens(address, now)
        if tokens < 1.0:
            return False
        self._buckets.pop(address, None)
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_addresses:
            self._forget(now)
        return True

    def retry_after(self, address: str) -> int:
        """Whole seconds until ``address`` may try again."""
        missing = 1.0 - self._tokens(address, self.clock())
        return max(1, math.ceil(missing / self.rate)) if self.enabled else 0

    def check(self, address: str) -> None:
        """JobError (HTTP 429 in the envelope) when ``address`` is over the limit."""
        if self.exhausted(address):
            raise self.refusal(address)

    def refusal(self, address: str) -> JobError:
        return JobError(
            ErrorCode.TOO_MANY_REQUESTS,
            f"Too many {self.what} from {address or 'this address'}: "
            f"try again in {self.retry_after(address)} s",
            http_status=429,
        )

    def _forget(self, now: float) -> None:
        full = [a for a in self._buckets if self._tokens(a, now) >= self.burst]
        for address in full:
            del self._buckets[address]
        # still too many (a flood of distinct addresses): the least recently seen go
        while len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]
