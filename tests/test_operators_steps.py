"""The steps the report operators are composed of (``operators/steps.py``), in real DAG runs against
the simulator: reuse compared in normalised form and bounded by ``reuse_lookback``, and
destinations named by any parameter or the interval."""

from __future__ import annotations

import datetime as dt
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _sim import sim, start_sim, stripe_conn  # noqa: F401
from airflow_harness import run_dag

from airflow_provider_reportruns.operators.report_run import StripeCreateReportRunOperator
from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator
from airflow_provider_reportruns.operators.steps import ReuseLookup, RunRequest, normalized_parameters
from airflow_provider_reportruns.testing.simulator import StripeSimulator

UTC = dt.timezone.utc
DAY = dt.datetime(2024, 3, 2, tzinfo=UTC)  # logical date; the daily data interval is [Mar 1, Mar 2)
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
WEEK = 7 * 24 * 3600

PREAMBLE = """\
from __future__ import annotations
import datetime as dt
try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow_provider_reportruns.operators.report_run import StripeCreateReportRunOperator
from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator
"""


def dag_file(write_dag: Callable[[str, str], Path], dag_id: str, task: str, *, retries: int = 0) -> Path:
    return write_dag(
        f"{dag_id}.py",
        PREAMBLE + f"\nwith DAG({dag_id!r}, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "
        'schedule=CronDataIntervalTimetable("@daily", timezone="UTC"), catchup=False, '
        f"default_args={{'retries': {retries}, 'retry_delay': dt.timedelta(seconds=0)}}):\n"
        + textwrap.indent(textwrap.dedent(task).strip() + "\n", "    "),
    )


def of_kind(simulator: StripeSimulator, kind: str) -> list[Any]:
    return [r for r in simulator.requests() if r.kind == kind]


def create_run(simulator: StripeSimulator, parameters: dict[str, Any]) -> str:
    """A run made outside the DAG (another DAG run, or someone by hand) with these parameters."""
    from airflow_provider_reportruns.client import StripeReportingClient

    with StripeReportingClient(simulator.api_key, api_base=simulator.url) as client:
        run_id = str(client.create_report_run("balance.summary.1", parameters)["id"])
    simulator.clear_requests()
    return run_id


# ---------------------------------------------------------------------------------------------
# Values passed between steps


def test_the_idempotency_key_changes_only_with_its_inputs() -> None:
    request = RunRequest("stripe_default", "balance.summary.1", {"interval_end": MAR_2}, ("d", "r", "t", -1, 1))
    same = RunRequest("stripe_default", "balance.summary.1", {"interval_end": MAR_2}, ("d", "r", "t", -1, 1))
    key = request.idempotency_key()

    assert key == same.idempotency_key() and key.startswith("airflow-reportruns-")
    assert request.idempotency_key(("frr_failed",)) != key  # a failed run seen: a new run, a new key
    assert request.idempotency_key(after_data_wait=True) != key  # Stripe kept the refusal under the old one
    next_try = RunRequest("stripe_default", "balance.summary.1", {"interval_end": MAR_2}, ("d", "r", "t", -1, 2))
    assert next_try.idempotency_key() != key


@pytest.mark.parametrize(
    ("durations", "delay"), [((), 30.0), ((4.0, 2.0, 9.0), 4.0), ((100.0, 200.0), 30.0), ((0.0,), 0.0)]
)
def test_the_first_poll_comes_after_the_median_of_recent_runs_never_later_than_the_poll_interval(
    durations: tuple[float, ...], delay: float
) -> None:
    assert ReuseLookup(recent_durations=durations).first_poll_delay(30.0) == delay
    operator = StripeCreateReportRunOperator(task_id="t", report_type="balance.summary.1", poll_interval=30)
    assert operator.first_poll_delay(ReuseLookup(recent_durations=durations)) == delay


# ---------------------------------------------------------------------------------------------
# Reuse: normalised comparison


def test_parameters_are_compared_in_the_form_stripe_means_them() -> None:
    assert normalized_parameters(
        {"currency": "USD", "interval_start": str(MAR_1), "interval_end": float(MAR_2), "columns": ("a", "b")}
    ) == normalized_parameters(
        {"currency": "usd", "interval_start": MAR_1, "interval_end": MAR_2, "columns": ["a", "b"]}
    )
    # The order of columns is the file's column order: another order is another report.
    assert normalized_parameters({"columns": ["a", "b"]}) != normalized_parameters({"columns": ["b", "a"]})
    assert normalized_parameters({"timezone": None}) == {}


def test_a_run_echoed_with_an_upper_case_currency_and_string_bounds_is_reused(write_dag, stripe_conn) -> None:
    run_id = create_run(
        stripe_conn,
        {
            "currency": "USD",
            "interval_start": str(MAR_1),
            "interval_end": str(MAR_2),
            "columns": ["category", "currency"],
        },
    )
    path = dag_file(
        write_dag,
        "reuse_normalised",
        'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", '
        'parameters={"currency": "usd", "columns": ("category", "currency")})',
    )

    result = run_dag(path, "reuse_normalised", logical_date=DAY)

    assert result.task_state("create") == "success"
    assert result.xcom("create") == run_id
    assert not of_kind(stripe_conn, "create")


def test_a_run_of_the_same_interval_with_other_parameters_is_not_reused_and_the_log_says_why(
    write_dag, stripe_conn
) -> None:
    other = create_run(stripe_conn, {"currency": "eur", "interval_start": MAR_1, "interval_end": MAR_2})
    path = dag_file(
        write_dag,
        "reuse_near_match",
        'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", parameters={"currency": "usd"})',
    )

    result = run_dag(path, "reuse_near_match", logical_date=DAY)

    assert result.task_state("create") == "success"
    assert result.xcom("create") != other
    assert len(of_kind(stripe_conn, "create")) == 1
    assert (
        f"Not reusing report run {other} of balance.summary.1 for this interval: its parameters differ "
        "(currency: 'eur' instead of 'usd')." in result.log("create")
    )


# ---------------------------------------------------------------------------------------------
# Reuse: a bounded walk


@pytest.mark.parametrize(
    ("lookback", "seconds"),
    [("", WEEK), ("reuse_lookback=dt.timedelta(days=1), ", 86400), ("reuse_lookback=3600, ", 3600)],
)
def test_a_2024_backfill_run_today_lists_runs_only_from_now_minus_the_lookback(
    write_dag, stripe_conn, lookback: str, seconds: int
) -> None:
    path = dag_file(
        write_dag,
        "lookback",
        f'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", {lookback})',
    )

    before = time.time()
    result = run_dag(path, "lookback", logical_date=DAY)
    after = time.time()

    assert result.task_state("create") == "success"
    [listing] = of_kind(stripe_conn, "list")
    gte = int(listing.query["created[gte]"])
    assert int(before) - seconds - 1 <= gte <= after - seconds


def test_a_recent_interval_lists_from_its_end_not_further_back(write_dag, stripe_conn) -> None:
    end = int(time.time()) - 3600
    start = end - 86400
    path = dag_file(
        write_dag,
        "lookback_recent",
        f'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", '
        f"interval_start={start}, interval_end={end})",
    )
    stripe_conn.set_data_available_end(end)

    result = run_dag(path, "lookback_recent", logical_date=DAY)

    assert result.task_state("create") == "success", result.log("create")
    [listing] = of_kind(stripe_conn, "list")
    assert int(listing.query["created[gte]"]) == end


def test_a_run_older_than_the_lookback_is_not_reused(write_dag, start_sim) -> None:
    offset = [-2 * 86400.0]  # the run is made two days ago, then the clock is back to now
    simulator = start_sim(clock=lambda: time.time() + offset[0])
    old = create_run(simulator, {"interval_start": MAR_1, "interval_end": MAR_2})
    offset[0] = 0.0
    path = dag_file(
        write_dag,
        "lookback_old",
        'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", reuse_lookback=86400)',
    )

    result = run_dag(path, "lookback_old", logical_date=DAY)

    assert result.task_state("create") == "success"
    assert result.xcom("create") != old
    assert len(of_kind(simulator, "create")) == 1


@pytest.mark.parametrize("value", [0, -1, "7 days", True, dt.timedelta(0), None])
@pytest.mark.parametrize(
    ("operator", "extra"),
    [(StripeCreateReportRunOperator, {}), (StripeReportToStorageOperator, {"destination": "/tmp/x.csv"})],
    ids=["create", "store"],
)
def test_a_reuse_lookback_that_is_not_a_positive_duration_is_refused_with_its_value(
    operator: Any, extra: dict[str, Any], value: Any
) -> None:
    with pytest.raises(ValueError) as refused:
        operator(task_id="t", report_type="balance.summary.1", reuse_lookback=value, **extra)
    assert str(refused.value) == (
        f"reuse_lookback must be a positive timedelta or number of seconds (default 7 days), got {value!r}."
    )


# ---------------------------------------------------------------------------------------------
# Destinations named by parameters and the interval


def test_a_mapped_by_id_task_names_each_file_by_its_payout(write_dag, stripe_conn, tmp_path: Path) -> None:
    destination = str(tmp_path / "payouts" / "{payout}.csv")
    path = dag_file(
        write_dag,
        "by_payout",
        f"""
        StripeReportToStorageOperator.partial(
            task_id="store",
            report_type="payout_reconciliation.by_id.summary.1",
            destination={destination!r},
            poll_interval=0.2,
        ).expand(parameters=[{{"payout": "po_1Alpha"}}, {{"payout": "po_1Beta"}}])
        """,
    )

    result = run_dag(path, "by_payout", logical_date=DAY)

    assert [result.task_state("store", i) for i in result.map_indexes("store")] == ["success", "success"]
    assert sorted(p.name for p in (tmp_path / "payouts").iterdir()) == ["po_1Alpha.csv", "po_1Beta.csv"]
    assert {result.xcom("store", map_index=i) for i in (0, 1)} == {
        str(tmp_path / "payouts" / "po_1Alpha.csv"),
        str(tmp_path / "payouts" / "po_1Beta.csv"),
    }


def test_interval_and_parameter_tokens_name_the_file(write_dag, stripe_conn, tmp_path: Path) -> None:
    destination = str(tmp_path / "{report_type}" / "{interval_start}_{interval_end}_{currency}.csv")
    path = dag_file(
        write_dag,
        "by_interval",
        f'StripeReportToStorageOperator(task_id="store", report_type="balance.summary.1", '
        f'destination={destination!r}, parameters={{"currency": "usd"}}, poll_interval=0.2)',
    )

    result = run_dag(path, "by_interval", logical_date=DAY)

    assert result.task_state("store") == "success", result.log("store")
    assert result.xcom("store") == str(tmp_path / "balance.summary.1" / "2024-03-01_2024-03-02_usd.csv")
    assert Path(result.xcom("store")).read_bytes()


def test_an_unknown_token_fails_once_before_any_request_naming_it_and_the_tokens_available(
    write_dag, stripe_conn, tmp_path: Path
) -> None:
    destination = str(tmp_path / "{payot}.csv")
    path = dag_file(
        write_dag,
        "bad_token",
        f'StripeReportToStorageOperator(task_id="store", report_type="payout_reconciliation.by_id.summary.1", '
        f'destination={destination!r}, parameters={{"payout": "po_1Alpha"}})',
        retries=3,
    )

    result = run_dag(path, "bad_token", logical_date=DAY)

    assert result.task_state("store") == "failed"
    assert len(result.logs("store")) == 1
    assert (
        f"The destination {destination!r} names {{payot}}, which this report run cannot fill; "
        "available: {report_type}, {report_run_id}, {payout}." in result.log("store")
    )
    assert stripe_conn.requests() == []


def test_the_download_operator_fills_parameter_tokens_from_the_run(write_dag, stripe_conn, tmp_path: Path) -> None:
    run_id = create_run(stripe_conn, {"currency": "usd", "interval_start": MAR_1, "interval_end": MAR_2})
    stripe_conn.finish_report_run(run_id)
    destination = str(tmp_path / "{currency}" / "{interval_end}.csv")
    path = write_dag(
        "download_tokens.py",
        PREAMBLE
        + "from airflow_provider_reportruns.operators.report_run import StripeDownloadReportRunOperator\n"
        + "with DAG('download_tokens', start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), schedule=None):\n"
        + f"    StripeDownloadReportRunOperator(task_id='download', report_run_id={run_id!r}, "
        f"destination={destination!r})\n",
    )

    result = run_dag(path, "download_tokens", logical_date=DAY)

    assert result.task_state("download") == "success", result.log("download")
    assert result.xcom("download") == str(tmp_path / "usd" / "2024-03-02.csv")


def test_the_outlet_asset_is_the_destination_up_to_its_first_token() -> None:
    operator = StripeReportToStorageOperator(
        task_id="t", report_type="payout_reconciliation.by_id.summary.1", destination="s3://bucket/payouts/{payout}.csv"
    )
    from airflow_provider_reportruns._compat import report_asset

    # Airflow normalises the URI it is given (3.x drops the trailing slash): compare with its own.
    assert [outlet.uri for outlet in operator.outlets] == [report_asset("s3://bucket/payouts/").uri]
    assert operator.outlets[0].uri.startswith("s3://bucket/payouts")


def test_a_dag_parse_loads_neither_the_client_nor_the_wait_and_create_steps() -> None:
    """The DAG processor imports operator modules and builds operators at every parse: the client
    and the wait model load on first use in a task, not then (they tipped a parse into a full
    garbage collection, +140 ms per parse)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import airflow_provider_reportruns.operators.report_run\n"
        "import airflow_provider_reportruns.sensors.report_run\n"
        "import airflow_provider_reportruns.sensors.report_type\n"
        "from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator\n"
        "StripeReportToStorageOperator(task_id='t', report_type='balance.summary.1',\n"
        "                              destination='/tmp/r/{report_type}/{{ ds }}.csv')\n"
        "heavy = ('airflow_provider_reportruns.client', 'airflow_provider_reportruns.waiting',\n"
        "         'airflow_provider_reportruns.operators.steps.wait', 'airflow_provider_reportruns.operators.steps.create')\n"
        "print(sorted(name for name in sys.modules if name.startswith(heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
