"""How a swarm's hosts are shared among the processes they enroll from."""

from __future__ import annotations

from jobfleet.agent.swarm_enroll import slices


def test_slices_cover_every_host_once_in_order() -> None:
    for count in (0, 1, 7, 100, 10_001):
        for parts in (1, 2, 3, 8):
            got = slices(count, parts)
            assert [i for start, n in got for i in range(start, start + n)] == list(range(count))
            sizes = [n for _, n in got]
            assert max(sizes) - min(sizes) <= 1
            assert len(got) == (min(parts, count) if count else 1)
