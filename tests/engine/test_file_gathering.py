"""engine/file_gathering.py: what a file step's settings become in the agents' messages."""

from __future__ import annotations

import orjson

from jobfleet.engine.file_gathering import MB, speed_limit


def test_a_speed_limit_is_bytes_a_second_that_an_agent_message_can_carry() -> None:
    assert speed_limit(None) is None and speed_limit(0) is None and speed_limit(-3) is None
    assert speed_limit(2) == 2 * MB and speed_limit(0.5) == MB // 2
    # a plan stored before limits were bounded: held to the largest limit, which encodes
    largest = speed_limit(2**62)
    assert largest == (2**31 - 1) * MB
    orjson.dumps({"speed_limit": largest})
