"""Which interval each report type takes, and how a DAG run's data interval becomes Stripe's."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_reportruns.intervals import ReportInterval, interval_fields, resolve_interval

JAN_1 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
JAN_2 = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)
T1, T2 = int(JAN_1.timestamp()), int(JAN_2.timestamp())


@pytest.mark.parametrize(
    ("report_type", "fields"),
    [
        ("balance.summary.1", ("interval_start", "interval_end")),
        ("payout_reconciliation.itemized.5", ("interval_start", "interval_end")),
        ("connected_account_balance.summary.1", ("interval_start", "interval_end")),
        ("ending_balance_reconciliation.summary.1", ("interval_end",)),
        ("connected_account_ending_balance_reconciliation.itemized.4", ("interval_end",)),
        ("payout_reconciliation.by_id.itemized.4", ()),
    ],
)
def test_interval_fields_follow_stripes_report_type_families(report_type, fields):
    assert interval_fields(report_type) == fields


def test_data_interval_is_used_when_none_is_given():
    got = resolve_interval("balance.summary.1", data_interval_start=JAN_1, data_interval_end=JAN_2)
    assert got == ReportInterval(T1, T2)
    assert got.as_parameters() == {"interval_start": T1, "interval_end": T2}


def test_explicit_bounds_win_over_the_data_interval_and_may_be_iso_strings():
    got = resolve_interval(
        "balance.summary.1",
        interval_start="2024-01-01T00:00:00+00:00",
        interval_end=T2,
        data_interval_start=JAN_2,
        data_interval_end=JAN_2 + dt.timedelta(days=1),
    )
    assert got == ReportInterval(T1, T2)


def test_bounds_inside_parameters_are_used():
    got = resolve_interval("balance.summary.1", parameters={"interval_start": T1, "interval_end": T2})
    assert got == ReportInterval(T1, T2)


def test_the_same_bound_given_twice_differently_is_refused():
    with pytest.raises(ValueError, match=r"interval_end is given twice with different values"):
        resolve_interval("balance.summary.1", parameters={"interval_end": T2}, interval_start=T1, interval_end=T2 + 1)


def test_ending_balance_types_take_only_the_interval_end_even_from_a_zero_length_interval():
    got = resolve_interval(
        "ending_balance_reconciliation.summary.1", data_interval_start=JAN_2, data_interval_end=JAN_2
    )
    assert got == ReportInterval(None, T2)
    with pytest.raises(ValueError, match="takes only interval_end"):
        resolve_interval("ending_balance_reconciliation.summary.1", interval_start=T1, interval_end=T2)


def test_by_id_types_take_a_payout_and_no_interval():
    assert resolve_interval("payout_reconciliation.by_id.summary.1", parameters={"payout": "po_1"}) == ReportInterval(
        None, None
    )
    with pytest.raises(ValueError, match=r"needs parameters=\{'payout': 'po_…'\}"):
        resolve_interval("payout_reconciliation.by_id.summary.1")
    with pytest.raises(ValueError, match="reports on one payout and takes no interval; remove interval_start"):
        resolve_interval("payout_reconciliation.by_id.summary.1", parameters={"payout": "po_1"}, interval_start=T1)


def test_zero_length_data_interval_explains_airflow_3_schedules():
    with pytest.raises(ValueError) as caught:
        resolve_interval("balance.summary.1", data_interval_start=JAN_2, data_interval_end=JAN_2)
    message = str(caught.value)
    assert "data interval is empty (data_interval_start == data_interval_end == 2024-01-02 00:00:00 UTC)" in message
    assert "Pass interval_start and interval_end explicitly" in message
    assert "CronDataIntervalTimetable('@daily', timezone='UTC')" in message


def test_end_not_after_start_is_refused_with_the_half_open_rule():
    with pytest.raises(
        ValueError,
        match=r"interval_end \(2024-01-01 00:00:00 UTC\) must be after interval_start \(2024-01-02 00:00:00 UTC\)",
    ):
        resolve_interval("balance.summary.1", interval_start=T2, interval_end=T1)
    with pytest.raises(ValueError, match="must be after interval_start"):
        resolve_interval("balance.summary.1", interval_start=T1, interval_end=T1)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match=r"interval_start is a naive datetime \(2024-01-01T00:00:00\)"):
        resolve_interval("balance.summary.1", interval_start=dt.datetime(2024, 1, 1), interval_end=T2)


def test_missing_interval_outside_a_dag_run_is_explained():
    with pytest.raises(ValueError, match="needs interval_start and interval_end: pass them, or run the task inside"):
        resolve_interval("balance.summary.1")
