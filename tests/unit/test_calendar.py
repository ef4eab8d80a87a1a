"""Tick arithmetic and start-time rules (no I/O): intervals, cron across DST, validation."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from oris.domain.calendar import Calendar, parse_rfc3339, start_time
from oris.domain.errors import InvalidArgument

BERLIN = ZoneInfo("Europe/Berlin")


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def local(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).astimezone(BERLIN)


def test_interval_ticks_sit_on_multiples_of_the_interval_whenever_they_are_computed() -> None:
    every = Calendar.parse(None, 15, None)
    assert every.next_after(1_000_000_001) == 1_000_005_000
    assert every.next_after(1_000_005_000) == 1_000_020_000
    ticks, total = every.ticks_between(1_000_005_000, 1_000_066_000, 3)
    assert total == 5
    assert ticks == [1_000_035_000, 1_000_050_000, 1_000_065_000]


def test_cron_in_a_zone_runs_once_on_both_daylight_saving_days() -> None:
    daily = Calendar.parse("30 2 * * *", None, "Europe/Berlin")
    before_spring = ms(datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN))
    ticks = []
    moment = before_spring
    for _ in range(3):
        moment = daily.next_after(moment)
        ticks.append(local(moment))
    # 02:30 does not exist on 29 March: it runs once, at 03:00.
    assert [(t.day, t.hour, t.minute) for t in ticks] == [(29, 3, 0), (30, 2, 30), (31, 2, 30)]
    before_fall = ms(datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN))
    first = daily.next_after(before_fall)
    second = daily.next_after(first)
    # 02:30 exists twice on 25 October: it runs once.
    assert (local(first).day, local(second).day) == (25, 26)


def test_cron_macros_and_names_are_understood() -> None:
    hourly = Calendar.parse("@hourly", None, None)
    assert hourly.next_after(ms(datetime(2026, 1, 1, 10, 15, tzinfo=UTC))) == ms(
        datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    )
    weekdays = Calendar.parse("0 9 * * mon-fri", None, "UTC")
    saturday = ms(datetime(2026, 1, 3, 10, 0, tzinfo=UTC))
    assert weekdays.next_after(saturday) == ms(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    ticks, total = weekdays.ticks_between(
        ms(datetime(2026, 1, 5, 9, 0, tzinfo=UTC)), ms(datetime(2026, 1, 9, 9, 0, tzinfo=UTC)), 2
    )
    assert total == 5 and len(ticks) == 2


@pytest.mark.parametrize(
    ("cron", "every", "zone"),
    [
        (None, None, None),
        ("* * * * *", 5, None),
        ("* * * *", None, None),
        ("* * * * * *", None, None),
        ("60 * * * *", None, None),
        ("@reboot", None, None),
        (None, 0, None),
        (None, 5, "Nowhere/City"),
        (None, 5, ""),
    ],
)
def test_bad_calendars_are_refused(cron: str | None, every: int | None, zone: str | None) -> None:
    with pytest.raises(InvalidArgument):
        Calendar.parse(cron, every, zone)


def test_start_times() -> None:
    now = 1_700_000_000_000
    assert start_time(None, None, now) is None
    assert start_time(None, 0, now) is None
    assert start_time(None, 250, now) == now + 250
    assert start_time("2023-11-14T22:13:20.500Z", None, now) == now + 500
    assert start_time("2023-11-14T23:13:20.500+01:00", None, now) == now + 500
    assert start_time("2020-01-01T00:00:00Z", None, now) is None  # past: at once
    for bad in ("2023-11-14", "2023-11-14T22:13:20", "x", "2023-13-01T00:00:00Z"):
        with pytest.raises(InvalidArgument):
            parse_rfc3339("run_at", bad)
    with pytest.raises(InvalidArgument):
        start_time("2023-11-14T22:13:20Z", 5, now)
    with pytest.raises(InvalidArgument):
        start_time(None, -1, now)
