"""Stripe's values on the wire: form encoding and timestamps."""

from __future__ import annotations

import datetime as dt

import pytest
from _client import JAN_1

from airflow_provider_reportruns.client import encode_form, to_unix_seconds


def test_encode_form_nests_parameters_and_indexes_lists_like_stripe_python():
    form = encode_form(
        {"report_type": "balance.summary.1", "parameters": {"interval_start": 1, "columns": ["a", "b"], "x": None}}
    )
    assert form == [
        ("report_type", "balance.summary.1"),
        ("parameters[interval_start]", "1"),
        ("parameters[columns][0]", "a"),
        ("parameters[columns][1]", "b"),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (JAN_1, JAN_1),
        (str(JAN_1), JAN_1),
        (float(JAN_1), JAN_1),
        ("2024-01-01T00:00:00Z", JAN_1),
        ("2024-01-01T01:00:00+01:00", JAN_1),
        (dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), JAN_1),
    ],
)
def test_to_unix_seconds_accepts_ints_iso_strings_and_aware_datetimes(value, expected):
    assert to_unix_seconds(value, "interval_start") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (dt.datetime(2024, 1, 1), r"interval_start is a naive datetime \(2024-01-01T00:00:00\); pass a timezone-aware"),
        ("2024-01-01T00:00:00", r"interval_start is a naive datetime"),
        (
            "yesterday",
            r"interval_start must be Unix seconds, an aware datetime or an ISO 8601 date-time, got 'yesterday'",
        ),
        (1.5, r"interval_start must be a whole number of Unix seconds, got 1.5"),
        (True, r"interval_start must be a timestamp, got the boolean True"),
        ([1], r"interval_start must be Unix seconds, an aware datetime or an ISO 8601 date-time, got list"),
    ],
)
def test_to_unix_seconds_refuses_what_it_cannot_place_in_utc(value, message):
    with pytest.raises(ValueError, match=message):
        to_unix_seconds(value, "interval_start")
