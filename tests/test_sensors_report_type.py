"""StripeReportDataAvailableSensor in real DAG runs against the simulator, whose data availability
the tests move while the sensor waits (as Stripe's twice-daily refresh does)."""

from __future__ import annotations

import datetime as dt
import itertools
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _sim import after_first, sim, start_sim, stripe_conn  # noqa: F401
from airflow_harness import DagRunResult, run_dag

from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator

UTC = dt.timezone.utc
DAY = dt.datetime(2024, 3, 2, tzinfo=UTC)  # the DAG run's data interval is [Mar 1, Mar 2)
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
HOUR = 3600
TRIGGER_RAN = "[DAG TEST] running trigger in line"

PREAMBLE = """\
from __future__ import annotations
import datetime as dt
try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow_provider_reportruns.sensors.report_type import StripeReportDataAvailableSensor
"""


def sensor_dag(write_dag, dag_id: str, mode: str = "poke", *, retries: int = 0, **kwargs: Any) -> Path:
    """One data-availability sensor for balance.summary.1 (``deferrable``: poke mode, deferrable=True)."""
    args = {"report_type": "balance.summary.1", "poke_interval": 0.2, "timeout": 60, **kwargs}
    if mode == "deferrable":
        args["deferrable"] = True
    else:
        args.update(mode=mode, deferrable=False)
    rendered = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return write_dag(
        f"{dag_id}.py",
        PREAMBLE + f"\nwith DAG({dag_id!r}, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "
        'schedule=CronDataIntervalTimetable("@daily", timezone="UTC"), catchup=False, '
        f"default_args={{'retries': {retries}, 'retry_delay': dt.timedelta(seconds=0)}}):\n"
        + textwrap.indent(f'StripeReportDataAvailableSensor(task_id="wait_for_data", {rendered})\n', "    "),
    )


def whole_log(result: DagRunResult) -> str:
    return "".join(result.logs("wait_for_data"))


def type_checks(simulator: StripeSimulator) -> list[Any]:
    return [r for r in simulator.requests() if r.kind == "report_type"]


@pytest.fixture
def after_first_check(after_first: Callable[..., None]) -> Callable[[StripeSimulator, float, Callable[[], None]], None]:
    """``after_first_check(simulator, seconds, action)``: run ``action`` that long after the sensor's
    first look at the report type, however long the DAG took to get there."""
    return lambda simulator, seconds, action: after_first(simulator, lambda r: r.kind == "report_type", seconds, action)


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_the_sensor_passes_only_once_stripe_moves_data_available_end_past_the_interval_end(
    write_dag, start_sim, after_first_check, mode: str
) -> None:
    simulator = start_sim(data_available_end=MAR_2 - 6 * HOUR)
    moved: list[float] = []

    def refresh() -> None:
        moved.append(time.time())
        simulator.set_data_available_end(MAR_2 + 6 * HOUR)

    after_first_check(simulator, 1.0, refresh)
    dag_id = f"data_moves_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, mode), dag_id, logical_date=DAY)

    assert result.state == "success"
    checks = type_checks(simulator)
    assert moved, "the sensor passed before Stripe's data was refreshed"
    before_refresh = [c for c in checks if c.timestamp < moved[0]]
    assert len(before_refresh) >= (3 if mode == "poke" else 1)
    assert checks[-1].timestamp > moved[0]
    assert result.xcom("wait_for_data")["data_available_end"] == MAR_2 + 6 * HOUR
    log = whole_log(result)
    if mode == "deferrable":
        assert TRIGGER_RAN in log
    else:
        waiting = (
            "Stripe's balance.summary.1 data is available through 2024-03-01 18:00:00 UTC; "
            "waiting for it to reach 2024-03-02 00:00:00 UTC."
        )
        assert log.count(waiting) == len(before_refresh), "every poke logs what it saw"
        assert "available through 2024-03-02 06:00:00 UTC, covering interval_end 2024-03-02 00:00:00 UTC" in log


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_an_interval_starting_before_data_available_start_fails_at_once_without_retries(
    write_dag, start_sim, mode: str
) -> None:
    simulator = start_sim(data_available_start=MAR_1 + 10 * 24 * HOUR)
    dag_id = f"too_old_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, mode, retries=3), dag_id, logical_date=DAY)

    assert result.task_state("wait_for_data") == "failed"
    assert result.try_numbers[("wait_for_data", -1)] == 1
    assert len(type_checks(simulator)) == 1
    assert (
        "Stripe has no balance.summary.1 data before 2024-03-11 00:00:00 UTC (data_available_start); "
        "the interval starts at 2024-03-01 00:00:00 UTC and will never become available." in whole_log(result)
    )
    assert TRIGGER_RAN not in whole_log(result)


@pytest.mark.parametrize(
    ("available_start", "available_end", "passes"),
    [
        pytest.param(MAR_1, MAR_2, True, id="exactly-the-data-interval"),
        pytest.param(MAR_1, MAR_2 - 1, False, id="one-second-short-of-its-end"),
        pytest.param(MAR_1 + 1, MAR_2 + HOUR, False, id="one-second-after-its-start"),
    ],
)
def test_without_bounds_the_sensor_waits_for_the_dag_runs_data_interval(
    write_dag, start_sim, request, available_start: int, available_end: int, passes: bool
) -> None:
    start_sim(data_available_start=available_start, data_available_end=available_end)
    dag_id = "default_interval_" + request.node.callspec.id.replace("-", "_")

    result = run_dag(sensor_dag(write_dag, dag_id, timeout=1), dag_id, logical_date=DAY)

    assert result.data_interval == (DAY - dt.timedelta(days=1), DAY)
    assert (result.state == "success") is passes
    log = whole_log(result)
    if available_end < MAR_2:
        assert "waiting for it to reach 2024-03-02 00:00:00 UTC" in log
        assert (
            "Stripe's data for balance.summary.1 did not become available within the sensor timeout of 1 s "
            f"(last data_available_end {MAR_2 - 1})." in log
        )
    if available_start > MAR_1:
        assert "the interval starts at 2024-03-01 00:00:00 UTC" in log


def test_explicit_templated_bounds_replace_the_data_interval(write_dag, start_sim) -> None:
    start_sim(data_available_end=MAR_2 - 12 * HOUR)
    dag_file = sensor_dag(
        write_dag,
        "explicit_bounds",
        interval_start="{{ data_interval_start }}",
        interval_end="{{ data_interval_end - macros.timedelta(hours=12) }}",
        timeout=5,
    )

    result = run_dag(dag_file, "explicit_bounds", logical_date=DAY)

    assert result.state == "success"
    assert "covering interval_end 2024-03-01 12:00:00 UTC" in whole_log(result)


def test_a_report_type_without_an_interval_has_nothing_to_wait_for(write_dag, stripe_conn) -> None:
    dag_file = sensor_dag(write_dag, "by_payout", report_type="payout_reconciliation.by_id.itemized.4")

    result = run_dag(dag_file, "by_payout", logical_date=DAY)

    assert result.state == "success"
    assert "reports on one payout; there is no interval to wait for" in whole_log(result)
    assert stripe_conn.requests() == []


def test_a_deferring_sensor_leaves_a_poke_interval_between_its_check_and_the_triggers_first_check(
    write_dag, start_sim, after_first_check
) -> None:
    # The poke has just read the report type: the trigger reading it again within milliseconds
    # would be a request repeated without need. Data moves 1.5 s after the poke: checks at ~0, ~1, ~2 s.
    simulator = start_sim(data_available_end=MAR_2 - 6 * HOUR)
    after_first_check(simulator, 1.5, lambda: simulator.set_data_available_end(MAR_2))

    result = run_dag(
        sensor_dag(write_dag, "data_first_poll_at", "deferrable", poke_interval=1.0),
        "data_first_poll_at",
        logical_date=DAY,
    )

    assert result.state == "success"
    assert TRIGGER_RAN in whole_log(result)
    checks = type_checks(simulator)
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(checks)]
    assert len(checks) == 3, gaps
    assert all(gap >= 0.9 for gap in gaps), gaps


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_a_stripe_outage_during_the_data_wait_is_waited_through_in_every_mode(
    write_dag, start_sim, after_first_check, mode: str
) -> None:
    simulator = start_sim(data_available_end=MAR_2 - 6 * HOUR, extra={"max_retries": 0})

    def outage_then_refresh() -> None:
        simulator.add_fault(Fault("report_type", "503", times=3))
        simulator.set_data_available_end(MAR_2 + 6 * HOUR)

    after_first_check(simulator, 0.0, outage_then_refresh)
    dag_id = f"data_outage_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, mode), dag_id, logical_date=DAY)

    assert result.task_state("wait_for_data") == "success", whole_log(result)
    assert [c.status for c in type_checks(simulator)].count(503) == 3
