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
# a session that held this long counts as a good one, however it ended
STABLE_SESSION = 10.0


def reconnect_delay(
    attempt: int, cap: float, draw: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds to wait before try ``attempt`` (1 for the first retry)."""
    ceiling = max(FLOOR, min(cap, BASE * 2 ** min(max(attempt, 0), MAX_DOUBLINGS)))
    return draw(FLOOR, ceiling)


def attempts_after(attempt: int, *, established: bool, lasted: float) -> int:
    """The attempt count to go on from once a session ends.

    A session that was established and held for ``STABLE_SESSION`` starts the count
    again, whether it ended with a close frame or a dropped connection (a server that
    crashed): its agent comes back within the first window, not the one its earlier
    failures had reached. One that was refused, or dropped at once, keeps counting, so
    a server that accepts and then drops every agent is not hammered."""
    if established and lasted >= STABLE_SESSION:
        return 0
    return attempt
