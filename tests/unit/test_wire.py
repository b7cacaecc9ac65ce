"""Wire formats: Datameer timestamps, durations, pretty JSON."""

from __future__ import annotations

import datetime as dt

from datamill.api.wire import Clock, PrettyJSONResponse, epoch_millis
from datamill.domain.estimate import format_duration, remaining_seconds


def test_datameer_timestamps_have_no_padding_and_english_months() -> None:
    clock = Clock("UTC")
    assert clock.datameer(dt.datetime(2018, 9, 28, 18, 44, 56)) == "Sep 28, 2018 6:44:56 PM"
    assert clock.datameer(dt.datetime(2013, 3, 5, 10, 4, 9)) == "Mar 5, 2013 10:04:09 AM"
    assert clock.datameer(dt.datetime(2020, 1, 1, 0, 0, 0)) == "Jan 1, 2020 12:00:00 AM"
    assert clock.datameer(dt.datetime(2020, 1, 1, 12, 0, 0)) == "Jan 1, 2020 12:00:00 PM"
    assert clock.datameer(None) is None


def test_timestamps_follow_the_configured_zone() -> None:
    berlin = Clock("Europe/Berlin")
    assert berlin.datameer(dt.datetime(2018, 7, 18, 11, 46, 38)) == "Jul 18, 2018 1:46:38 PM"


def test_epoch_millis_of_stored_utc_times() -> None:
    assert epoch_millis(dt.datetime(2020, 2, 4, 9, 36, 34, 422000)) == 1580808994422
    assert epoch_millis(None) is None


def test_pretty_json_is_one_member_per_line() -> None:
    body = PrettyJSONResponse({"status": "success", "a": [1, 2], "b": None}).body
    assert body == b'{\n  "status": "success",\n  "a": [\n    1,\n    2\n  ],\n  "b": null\n}'


def test_durations_read_like_datameer() -> None:
    assert format_duration(11.4) == "11s"
    assert format_duration(200) == "3m 20s"
    assert format_duration(3900) == "1h 5m 0s"
    assert format_duration(-3) == "0s"


def test_estimates_blend_pace_and_history() -> None:
    assert remaining_seconds(10.0, 0.5, None) == 10.0
    assert remaining_seconds(10.0, None, 25.0) == 15.0
    assert remaining_seconds(10.0, 0.0, None) is None
    blended = remaining_seconds(10.0, 0.5, 30.0)
    assert blended is not None and 10.0 < blended < 20.0
    assert remaining_seconds(40.0, None, 25.0) == 0.0
