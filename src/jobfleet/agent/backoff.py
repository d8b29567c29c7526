"""How long an agent waits before it tries the server again.

Full jitter, capped: a uniform draw between ``FLOOR`` and the smaller of ``cap``
and ``BASE * 2**attempt``. After a server restart ten thousand agents spread their
reconnects over the whole window instead of arriving in step (a thundering herd),
and the window stops growing at ``cap``, so every agent is back within about
``cap`` seconds of the server answering again.
"""

from __future__ import annotations

import random
from collections.abc import Callable

FLOOR = 0.1
BASE = 0.5
# past this many attempts the window is the cap anyway (and 2**attempt stays small)
MAX_DOUBLINGS = 8


def reconnect_delay(
    attempt: int, cap: float, draw: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds to wait before try ``attempt`` (1 for the first retry)."""
    ceiling = max(FLOOR, min(cap, BASE * 2 ** min(max(attempt, 0), MAX_DOUBLINGS)))
    return draw(FLOOR, ceiling)
