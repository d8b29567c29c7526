from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from jobfleet.domain.cron import (
    CronClock,
    Schedule,
    check_execute_time,
    check_name,
    check_timezone,
    decide,
    next_slot,
    parse_expression,
)
from jobfleet.domain.errors import ErrorCode, JobError

NY = ZoneInfo("America/New_York")


def at(*args: int, tz: ZoneInfo | None = None) -> int:
    return int(datetime(*args, tzinfo=tz or UTC).timestamp())  # type: ignore[misc]


def slots(expression: str, start: int, count: int, timezone: str = "UTC") -> list[int]:
    out = []
    for _ in range(count):
        nxt = next_slot(parse_expression(expression), timezone, start)
        assert nxt is not None
        out.append(nxt)
        start = nxt
    return out


def local(stamps: list[int], tz: ZoneInfo = NY) -> list[str]:
    return [datetime.fromtimestamp(s, tz).strftime("%m-%d %H:%M%z") for s in stamps]


@pytest.mark.parametrize(("expression", "minutes"), [
    ("0/5 * * * *", [0, 5, 10, 15]),
    ("*/15 * * * *", [0, 15, 30, 45]),
    ("7/20 * * * *", [7, 27, 47, 7]),
    ("1-3 * * * *", [1, 2, 3, 1]),
    ("10-30/10 * * * *", [10, 20, 30, 10]),
    ("5,50 * * * *", [5, 50, 5, 50]),
])
def test_minute_forms(expression: str, minutes: list[int]) -> None:
    start = at(2024, 5, 1, 9, 0) - 1
    got = [datetime.fromtimestamp(s, UTC).minute for s in slots(expression, start, 4)]
    assert got == minutes


def test_hours_days_months_and_week() -> None:
    # 2024-05-01 is a Wednesday
    start = at(2024, 5, 1)
    assert local(slots("30 9 * * 1-5", start, 3), ZoneInfo("UTC")) == [
        "05-01 09:30+0000", "05-02 09:30+0000", "05-03 09:30+0000"]
    # 0 and 7 are both Sunday
    assert slots("0 0 * * 0", start, 2) == slots("0 0 * * 7", start, 2) == [
        at(2024, 5, 5), at(2024, 5, 12)]
    assert slots("0 0 * * SUN", start, 1) == [at(2024, 5, 5)]
    assert slots("0 12 1 JAN,jul *", start, 2) == [at(2024, 7, 1, 12), at(2025, 1, 1, 12)]
    # day of month and day of week both restricted: either matches (Vixie cron)
    assert slots("0 0 10 * 1", start, 3) == [at(2024, 5, 6), at(2024, 5, 10), at(2024, 5, 13)]
    assert slots("0 0 29 2 *", start, 1) == [at(2028, 2, 29)]


def test_expression_is_normalized() -> None:
    assert parse_expression("  0/5   *  * * mon ") == "0/5 * * * MON"


@pytest.mark.parametrize(("expression", "says"), [
    ("", "Missing parameter [expression]"),
    ("* * * *", "has 4 fields"),
    ("0 * * * * *", "seconds and years are not supported"),
    ("0 0 ? * *", "'?' is not supported"),
    ("0 0 * * ?", "'?' is not supported"),
    ("0 0 L * *", "'L' is not supported"),
    ("0 0 15W * *", "'15W' is not supported"),
    ("0 0 * * 1#2", "'#' is not supported"),
    ("60 * * * *", "minute 60 is out of range 0-59"),
    ("* 24 * * *", "hour 24 is out of range 0-23"),
    ("* * 0 * *", "day 0 is out of range 1-31"),
    ("* * * 13 *", "month 13 is out of range 1-12"),
    ("* * * * 8", "week 8 is out of range 0-7"),
    ("5-1 * * * *", "range 5-1 runs backwards"),
    ("*/0 * * * *", "must be a positive number"),
    ("*/x * * * *", "must be a positive number"),
    ("1,,2 * * * *", "empty list item"),
    ("one * * * *", "is not a number in the minute field"),
    ("0 0 30 2 *", "names a day that no month has"),
    ("@reboot", "'@reboot' is not supported"),
    ("@daily", "5 fields ('0 0 * * *' for @daily)"),
    (" @every 5m", "'@every' is not supported"),
    # more digits than a number is read from
    ("9" * 5000 + " * * * *", "is out of range 0-59"),
    ("1-" + "9" * 5000 + " * * * *", "is out of range 0-59"),
    ("*/" + "9" * 5000 + " * * * *", "is larger than the minute range"),
    ("*/" + "0" * 5000 + " * * * *", "must be a positive number"),
    # valid, but longer than a cron keeps
    (",".join(["1"] * 128) + " * * * *", "at most 255 characters"),
])
def test_invalid_expressions_say_why(expression: str, says: str) -> None:
    with pytest.raises(JobError) as err:
        parse_expression(expression)
    missing = not expression
    assert err.value.code == (ErrorCode.MISSING_PARAM_WITH_NAME if missing
                              else ErrorCode.INVALID_PARAM_WITH_REASON)
    assert says in err.value.message, err.value.message


def test_timezones() -> None:
    assert check_timezone("Asia/Shanghai") == "Asia/Shanghai"
    assert check_timezone(" UTC ") == "UTC"
    assert check_timezone("Asia/Calcutta") == "Asia/Calcutta"  # an IANA link
    assert check_timezone("EST5EDT") == "EST5EDT"
    # files of the zone directory that are no IANA zone: "localtime" is each machine's
    # own zone, so two servers could fire one cron at different times
    for bad in ("Mars/Olympus", "../etc/passwd", "GMT+25", "localtime", "posixrules",
                "posix/Asia/Shanghai", "right/UTC"):
        with pytest.raises(JobError) as err:
            check_timezone(bad)
        assert err.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
        assert "IANA" in err.value.message
    # the same expression fires at the zone's local time
    start = at(2024, 1, 1)
    assert slots("0 9 * * *", start, 1, "Asia/Shanghai") == [at(2024, 1, 1, 1)]
    assert slots("0 9 * * *", start, 1, "America/New_York") == [at(2024, 1, 1, 14)]


def test_dst_spring_forward_runs_skipped_time_once() -> None:
    # 2024-03-10 02:00-03:00 does not exist in New York
    start = at(2024, 3, 9, 12, tz=NY)
    assert local(slots("30 2 * * *", start, 3, "America/New_York")) == [
        "03-10 03:00-0400", "03-11 02:30-0400", "03-12 02:30-0400"]
    hourly = slots("0 * * * *", at(2024, 3, 10, 0, 30, tz=NY), 3, "America/New_York")
    assert local(hourly) == ["03-10 01:00-0500", "03-10 03:00-0400", "03-10 04:00-0400"]


def test_dst_fall_back_fixed_time_runs_once_hourly_runs_each_hour() -> None:
    # 2024-11-03 01:00-02:00 happens twice in New York
    start = at(2024, 11, 2, 12, tz=NY)
    assert local(slots("30 1 * * *", start, 2, "America/New_York")) == [
        "11-03 01:30-0400", "11-04 01:30-0500"]
    hourly = slots("0 * * * *", at(2024, 11, 3, 0, 30, tz=NY), 3, "America/New_York")
    assert local(hourly) == ["11-03 01:00-0400", "11-03 01:00-0500", "11-03 02:00-0500"]
    assert hourly[1] - hourly[0] == 3600


@pytest.mark.parametrize("expression", ["30 1 * * *", "15 1 * * *", "0 1 * * *"])
def test_a_fixed_time_after_a_moment_of_the_repeated_hour_is_later(expression: str) -> None:
    # 01:10 EST (the second 01:10 of 2024-11-03): the first 01:xx, EDT, has passed
    second = at(2024, 11, 3, 6, 10)
    assert local([second]) == ["11-03 01:10-0500"]
    nxt = next_slot(expression, "America/New_York", second)
    assert nxt is not None and nxt > second
    assert local([nxt])[0].startswith("11-04 01:")
    # a cron started then fires nothing until that slot (not the hour's EDT one, past)
    schedule = Schedule(expression, "America/New_York")
    due = schedule.after(second)
    assert due is not None
    d = decide(schedule, due, second + 1, grace=3600)
    assert d.fire is None or d.fire > second


def test_time_scale() -> None:
    one = CronClock(1)
    assert one.cron(1_234_567_890.5) == 1_234_567_890.5
    assert one.slot_of(1_800_000_000) == 1_800_000_000
    fast = CronClock(60)
    wall = 1_800_000_000.25
    assert fast.wall(fast.cron(wall)) == pytest.approx(wall)
    # one wall second is one cron minute
    assert fast.cron(wall + 1) - fast.cron(wall) == pytest.approx(60)
    # so a per-minute cron is due every wall second
    now = fast.now(wall)
    first = next_slot("* * * * *", "UTC", now)
    assert first is not None
    second = next_slot("* * * * *", "UTC", first)
    assert second is not None
    assert fast.wall(second) - fast.wall(first) == pytest.approx(1)
    assert 0 < fast.wall(first) - wall <= 1
    # a one-shot time is wall-clock: it fires when the wall clock reaches it
    assert fast.wall(fast.slot_of(1_800_000_100)) == pytest.approx(1_800_000_100, abs=1 / 60)
    # scaled dates stay within what datetime holds: scale 60 for a century, 1000 until 2031
    assert next_slot("0 0 1 1 *", "Asia/Shanghai", fast.now(4_800_000_000)) is not None
    assert next_slot("0 0 1 1 *", "Asia/Shanghai", CronClock(1000).now(1_940_000_000))
    for bad in (0, 0.5, 1001):
        with pytest.raises(ValueError):
            CronClock(bad)


def test_decide_fires_due_slot_and_moves_on() -> None:
    every_minute = Schedule("* * * * *", "UTC")
    due = at(2024, 5, 1, 9, 0)
    d = decide(every_minute, due, due + 3, grace=300)
    assert (d.fire, d.skipped, d.next) == (due, None, due + 60)


def test_decide_fires_only_the_latest_missed_slot_within_grace() -> None:
    every_minute = Schedule("* * * * *", "UTC")
    due = at(2024, 5, 1, 9, 0)
    d = decide(every_minute, due, due + 150, grace=300)
    assert (d.fire, d.skipped, d.next) == (due + 120, due, due + 180)
    assert "superseded" in d.reason


def test_decide_skips_slots_older_than_grace() -> None:
    hourly = Schedule("0 * * * *", "UTC")
    due = at(2024, 5, 1, 9, 0)
    # down for 2 h 10 min: 10:00 is beyond the 5 min grace, 11:00 too, nothing fires
    d = decide(hourly, due, due + 2 * 3600 + 600, grace=300)
    assert (d.fire, d.skipped, d.next) == (None, due, due + 3 * 3600)
    assert "grace" in d.reason
    # within the grace window of 11:00: that one fires, once
    d = decide(hourly, due, due + 2 * 3600 + 120, grace=300)
    assert (d.fire, d.skipped, d.next) == (due + 2 * 3600, due, due + 3 * 3600)


def test_decide_one_shot() -> None:
    slot = at(2024, 5, 1, 9, 0)
    once = Schedule(None, "UTC", slot)
    assert decide(once, slot, slot + 10, grace=300).fire == slot
    assert decide(once, slot, slot + 10, grace=300).next is None
    late = decide(once, slot, slot + 301, grace=300)
    assert (late.fire, late.skipped, late.next) == (None, slot, None)


def test_execute_time_and_name_checks() -> None:
    now = 1_800_000_000.0
    check_execute_time(1_800_000_001, now)
    with pytest.raises(JobError) as err:
        check_execute_time(1_800_000_000, now)
    assert err.value.code == ErrorCode.CRON_TIME_PASSED
    with pytest.raises(JobError) as err:
        check_execute_time(1_800_000_000_000, now)
    assert "not milliseconds" in err.value.message
    assert check_name(" nightly ") == "nightly"
    with pytest.raises(JobError) as err:
        check_name("x" * 61)
    assert err.value.code == ErrorCode.INVALID_PARAM_WITH_REASON
