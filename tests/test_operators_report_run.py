"""StripeCreateReportRunOperator and StripeDownloadReportRunOperator in real DAG runs (``dag.test()``
on SQLite) against the local Stripe simulator over HTTP: what is sent, what is reused, what lands where."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _sim import sim, start_sim, stripe_conn  # noqa: F401
from airflow_harness import airflow_major, run_dag

from airflow_provider_reportruns.testing.simulator import DEFAULT_FAILURE_MESSAGE, Fault, StripeSimulator

AIRFLOW_3 = airflow_major() >= 3
UTC = dt.timezone.utc
DAY = dt.datetime(2024, 3, 2, tzinfo=UTC)  # logical date; the daily data interval is [Mar 1, Mar 2)
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
FEB_10 = int(dt.datetime(2024, 2, 10, tzinfo=UTC).timestamp())
FEB_11 = int(dt.datetime(2024, 2, 11, tzinfo=UTC).timestamp())

PREAMBLE = """\
from __future__ import annotations
import datetime as dt
try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow_provider_reportruns.operators.report_run import (
    StripeCreateReportRunOperator,
    StripeDownloadReportRunOperator,
)
DAILY = CronDataIntervalTimetable("@daily", timezone="UTC")
"""


def dag_source(dag_id: str, tasks: str, *, schedule: str = "DAILY", retries: int = 0, head: str = "") -> str:
    """A DAG file: the preamble, ``head`` (module level), then ``tasks`` inside ``with DAG(...)``."""
    return (
        PREAMBLE
        + textwrap.dedent(head)
        + f"\nwith DAG({dag_id!r}, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "
        f"schedule={schedule}, catchup=False, "
        f"default_args={{'retries': {retries}, 'retry_delay': dt.timedelta(seconds=0)}}):\n"
        + textwrap.indent(textwrap.dedent(tasks).strip() + "\n", "    ")
    )


def creates(simulator: StripeSimulator) -> list[Any]:
    return [r for r in simulator.requests() if r.kind == "create"]


def succeeded_run(simulator: StripeSimulator, report_type: str = "balance.summary.1") -> dict[str, Any]:
    """A finished run made through the real client, for the download tests."""
    from airflow_provider_reportruns.client import StripeReportingClient

    with StripeReportingClient(simulator.api_key, api_base=simulator.url) as client:
        run = client.create_report_run(report_type, {"interval_start": MAR_1, "interval_end": MAR_2})
    simulator.finish_report_run(run["id"])
    return simulator.report_run(run["id"])


@pytest.fixture
def finish_after_first_poll() -> Iterator[Callable[[StripeSimulator], None]]:
    """Watch a simulator and finish each run 0.3 s after its first retrieve, so every waiter sees
    it pending once (and defers) whenever it starts."""
    stop = threading.Event()

    def watch(simulator: StripeSimulator) -> None:
        seen: set[str] = set()
        while not stop.wait(0.05):
            for request in simulator.requests():
                if request.kind == "retrieve" and request.run_id and request.run_id not in seen:
                    seen.add(request.run_id)
                    threading.Timer(0.3, simulator.finish_report_run, (request.run_id,)).start()

    yield lambda simulator: threading.Thread(target=watch, args=(simulator,), daemon=True).start()
    stop.set()


# ---------------------------------------------------------------------------------------------
# Create: what is sent


def test_create_sends_the_dag_runs_data_interval_as_utc_unix_seconds_and_returns_the_run_id(
    write_dag, stripe_conn
) -> None:
    dag_file = write_dag(
        "create_interval.py",
        dag_source(
            "create_interval",
            'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", '
            'parameters={"currency": "usd"})',
        ),
    )

    result = run_dag(dag_file, "create_interval", logical_date=DAY)

    assert result.state == "success"
    [create] = creates(stripe_conn)
    assert create.form == {
        "report_type": "balance.summary.1",
        "parameters": {"currency": "usd", "interval_start": str(MAR_1), "interval_end": str(MAR_2)},
    }
    [run] = stripe_conn.report_runs()
    assert result.xcom("create") == run["id"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param(
            "dt.datetime(2024, 2, 10, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))",
            "dt.datetime(2024, 2, 10, 19, tzinfo=dt.timezone(dt.timedelta(hours=-5)))",
            (FEB_10, FEB_11),
            id="aware-datetimes-in-other-zones",
        ),
        pytest.param('"2024-02-10T00:00:00Z"', '"2024-02-11T01:00:00+01:00"', (FEB_10, FEB_11), id="iso-strings"),
        pytest.param(str(FEB_10), f'"{FEB_11}"', (FEB_10, FEB_11), id="unix-seconds-int-and-str"),
        pytest.param(
            '"{{ data_interval_start }}"', '"{{ data_interval_end }}"', (MAR_1, MAR_2), id="templated-datetimes"
        ),
        pytest.param(
            '"{{ (data_interval_start - macros.timedelta(days=20)).timestamp() | int }}"',
            '"{{ (data_interval_end - macros.timedelta(days=20)).timestamp() | int }}"',
            (FEB_10, FEB_11),
            id="templated-unix-seconds",
        ),
    ],
)
def test_explicit_interval_bounds_in_every_accepted_form_reach_stripe_as_utc_unix_seconds(
    write_dag, stripe_conn, request, start: str, end: str, expected: tuple[int, int]
) -> None:
    dag_id = "bounds_" + request.node.callspec.id.replace("-", "_")
    dag_file = write_dag(
        f"{dag_id}.py",
        dag_source(
            dag_id,
            f'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", '
            f"interval_start={start}, interval_end={end})",
        ),
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success", result.log("create")
    [create] = creates(stripe_conn)
    sent = create.form["parameters"]
    assert (int(sent["interval_start"]), int(sent["interval_end"])) == expected


def test_a_naive_datetime_bound_fails_before_any_request(write_dag, stripe_conn) -> None:
    dag_file = write_dag(
        "naive_bound.py",
        dag_source(
            "naive_bound",
            'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", '
            "interval_start=dt.datetime(2024, 2, 10), interval_end=dt.datetime(2024, 2, 11))",
        ),
    )

    result = run_dag(dag_file, "naive_bound", logical_date=DAY)

    assert result.task_state("create") == "failed"
    assert "interval_start is a naive datetime" in result.log("create")
    assert stripe_conn.requests() == []


@pytest.mark.parametrize(
    ("report_type", "parameters", "expected"),
    [
        pytest.param(
            "payout_reconciliation.by_id.itemized.4",
            {"payout": "po_1OaBcDeFgHiJkLmN"},
            {"payout": "po_1OaBcDeFgHiJkLmN"},
            id="by-payout",
        ),
        pytest.param(
            "ending_balance_reconciliation.summary.1", {}, {"interval_end": str(MAR_2)}, id="interval-end-only"
        ),
    ],
)
def test_report_types_without_a_full_interval_get_only_the_parameters_they_take(
    write_dag, stripe_conn, request, report_type: str, parameters: dict[str, str], expected: dict[str, str]
) -> None:
    dag_id = "interval_less_" + request.node.callspec.id.replace("-", "_")
    dag_file = write_dag(
        f"{dag_id}.py",
        dag_source(
            dag_id,
            f'StripeCreateReportRunOperator(task_id="create", report_type={report_type!r}, parameters={parameters!r})',
        ),
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success", result.log("create")
    [create] = creates(stripe_conn)
    assert create.form == {"report_type": report_type, "parameters": expected}
    [run] = stripe_conn.report_runs()
    assert result.xcom("create") == run["id"]


def test_data_not_yet_available_error_points_at_the_data_available_sensor(write_dag, start_sim) -> None:
    simulator = start_sim(data_available_end=MAR_1 + 12 * 3600)
    dag_file = write_dag(
        "create_too_early.py",
        dag_source(
            "create_too_early", 'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1")'
        ),
    )

    result = run_dag(dag_file, "create_too_early", logical_date=DAY)

    assert result.task_state("create") == "failed"
    log = result.log("create")
    assert "is only available through 2024-03-01 12:00:00 UTC" in log  # Stripe's own words
    assert "StripeReportDataAvailableSensor" in log
    assert simulator.report_runs() == []


def test_an_airflow_3_daily_preset_gives_an_empty_interval_and_the_error_names_the_timetable_to_use(
    write_dag, stripe_conn
) -> None:
    if not AIRFLOW_3:
        pytest.skip('Airflow 2 "@daily" is already a CronDataIntervalTimetable with a one-day interval')
    dag_file = write_dag(
        "daily_preset.py",
        dag_source(
            "daily_preset",
            'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1")',
            schedule='"@daily"',
        ),
    )

    result = run_dag(dag_file, "daily_preset", logical_date=DAY)

    assert result.data_interval == (DAY, DAY)
    assert result.task_state("create") == "failed"
    log = result.log("create")
    assert "data interval is empty" in log
    assert "CronDataIntervalTimetable('@daily', timezone='UTC')" in log
    assert stripe_conn.requests() == []


def test_a_manual_run_of_an_unscheduled_dag_has_an_empty_interval_and_fails_the_same_way(
    write_dag, stripe_conn
) -> None:
    # schedule=None gives data_interval_start == data_interval_end on both Airflow versions.
    dag_file = write_dag(
        "unscheduled.py",
        dag_source(
            "unscheduled",
            'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1")',
            schedule="None",
        ),
    )

    result = run_dag(dag_file, "unscheduled", logical_date=DAY)

    assert result.task_state("create") == "failed"
    assert "CronDataIntervalTimetable('@daily', timezone='UTC')" in result.log("create")
    assert stripe_conn.requests() == []


# ---------------------------------------------------------------------------------------------
# Create: waiting for completion


@pytest.mark.parametrize("deferrable", [False, True], ids=["poll", "deferrable"])
def test_wait_for_completion_pushes_the_run_id_and_returns_it_once_succeeded(
    write_dag, start_sim, deferrable: bool
) -> None:
    simulator = start_sim(run_delay=1.0)
    dag_id = f"wait_ok_{'deferrable' if deferrable else 'poll'}"
    dag_file = write_dag(
        f"{dag_id}.py",
        dag_source(
            dag_id,
            f'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", '
            f"wait_for_completion=True, deferrable={deferrable}, poll_interval=0.2)",
        ),
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success", result.log("create")
    [run] = simulator.report_runs()
    assert run["status"] == "succeeded"
    assert result.xcom("create") == result.xcom("create", key="report_run_id") == run["id"]
    retrieves = [r for r in simulator.requests() if r.kind == "retrieve"]
    assert retrieves, "the operator returned without checking the run's status"
    log = result.log("create")
    assert f"Stripe report run {run['id']} succeeded." in log
    assert ("[DAG TEST] running trigger in line" in log) is deferrable


@pytest.mark.parametrize("deferrable", [False, True], ids=["poll", "deferrable"])
def test_wait_for_completion_fails_with_stripes_message_and_the_run_id_is_already_in_xcom(
    write_dag, start_sim, deferrable: bool
) -> None:
    simulator = start_sim(run_delay=0.5, fail_report_types=["balance.summary.1"])
    dag_id = f"wait_failed_{'deferrable' if deferrable else 'poll'}"
    dag_file = write_dag(
        f"{dag_id}.py",
        dag_source(
            dag_id,
            f'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", '
            f"wait_for_completion=True, deferrable={deferrable}, poll_interval=0.2)",
        ),
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.task_state("create") == "failed"
    [run] = simulator.report_runs()
    log = result.log("create")
    assert f"Stripe report run {run['id']} (balance.summary.1) failed: {DEFAULT_FAILURE_MESSAGE}" in log
    # Pushed before the wait began, so a retry or a link finds the run although the task failed.
    assert result.xcom("create", key="report_run_id") == run["id"]
    with pytest.raises(KeyError):
        result.xcom("create")


# ---------------------------------------------------------------------------------------------
# Create: no duplicates (issue 4)

CREATE_TASK = 'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1")'


@pytest.mark.parametrize("run_delay", [3600.0, 0.0], ids=["pending", "succeeded"])
def test_running_the_same_interval_again_reuses_its_run(write_dag, start_sim, run_delay: float) -> None:
    simulator = start_sim(run_delay=run_delay)
    dag_file = write_dag("rerun.py", dag_source("rerun", CREATE_TASK))

    first = run_dag(dag_file, "rerun", logical_date=DAY)
    second = run_dag(dag_file, "rerun", logical_date=DAY)

    [run] = simulator.report_runs()
    assert run["status"] == ("pending" if run_delay else "succeeded")
    assert first.xcom("create") == second.xcom("create") == run["id"]
    assert len(creates(simulator)) == 1
    assert f"Reusing Stripe report run {run['id']}" in second.log("create")


CRASH_AFTER_CREATE = """
class CreateThenCrash(StripeCreateReportRunOperator):
    # The first try dies after Stripe accepted the run (a lost worker, an OOM kill, ...).
    def execute(self, context):
        run_id = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError(f"crash-after-create marker: {run_id}")
        return run_id
"""


@pytest.mark.parametrize("run_delay", [3600.0, 0.0], ids=["pending", "succeeded"])
def test_a_retry_after_a_crash_following_the_create_reattaches_to_the_run(
    write_dag, start_sim, run_delay: float
) -> None:
    simulator = start_sim(run_delay=run_delay)
    dag_file = write_dag(
        "crash_retry.py",
        dag_source(
            "crash_retry",
            'CreateThenCrash(task_id="create", report_type="balance.summary.1")',
            retries=1,
            head=CRASH_AFTER_CREATE,
        ),
    )

    result = run_dag(dag_file, "crash_retry", logical_date=DAY)

    assert result.state == "success"
    assert result.try_numbers[("create", -1)] == 2
    [run] = simulator.report_runs()
    assert f"crash-after-create marker: {run['id']}" in result.log("create", try_number=1)
    assert f"Reusing Stripe report run {run['id']}" in result.log("create", try_number=2)
    assert result.xcom("create") == run["id"]
    assert len(creates(simulator)) == 1


def test_a_failed_earlier_run_is_not_reused_and_a_new_one_is_created(write_dag, start_sim) -> None:
    simulator = start_sim(run_delay=0.0)
    dag_file = write_dag("after_failure.py", dag_source("after_failure", CREATE_TASK))
    first = run_dag(dag_file, "after_failure", logical_date=DAY)
    simulator.finish_report_run(first.xcom("create"), status="failed")

    # On Airflow 2 this second run has the same run id and try number as the first: only the
    # failed run entering the idempotency key keeps Stripe from replaying the failed run.
    second = run_dag(dag_file, "after_failure", logical_date=DAY)

    assert second.state == "success"
    runs = {run["id"]: run for run in simulator.report_runs()}
    assert len(runs) == 2
    assert runs[first.xcom("create")]["status"] == "failed"
    assert second.xcom("create") != first.xcom("create")
    assert runs[second.xcom("create")]["status"] == "succeeded"
    assert [r.replayed for r in creates(simulator)] == [False, False]


def test_the_list_lookup_prevents_a_duplicate_when_the_idempotency_key_differs(write_dag, start_sim) -> None:
    # Stripe forgets idempotency keys after ~24 h; a rerun then (or from another DAG run, another
    # task try) carries a different key. Different DAG ids give different keys today.
    simulator = start_sim(run_delay=3600.0)
    first_file = write_dag("keyed_a.py", dag_source("keyed_a", CREATE_TASK))
    again_file = write_dag("keyed_b.py", dag_source("keyed_b", CREATE_TASK))
    no_lookup_file = write_dag(
        "keyed_c.py",
        dag_source(
            "keyed_c",
            'StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", reuse_existing=False)',
        ),
    )

    first = run_dag(first_file, "keyed_a", logical_date=DAY)
    again = run_dag(again_file, "keyed_b", logical_date=DAY)

    assert again.xcom("create") == first.xcom("create")
    assert len(simulator.report_runs()) == 1
    assert len(creates(simulator)) == 1

    # Without the lookup the different key does make a second run: the lookup is what held.
    no_lookup = run_dag(no_lookup_file, "keyed_c", logical_date=DAY)
    assert no_lookup.xcom("create") != first.xcom("create")
    keys = [r.headers.get("Idempotency-Key") for r in creates(simulator)]
    assert len(set(keys)) == 2 and all(keys)


# ---------------------------------------------------------------------------------------------
# Backfills and mapping, through the example DAGs


@pytest.fixture
def example_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    reports = tmp_path / "reports"
    monkeypatch.setenv("STRIPE_REPORTS_DIR", str(reports))
    monkeypatch.setenv("STRIPE_EXAMPLE_POKE_SECONDS", "1")
    return reports


def test_a_seven_day_backfill_makes_seven_runs_with_half_open_daily_intervals_and_a_rerun_makes_none(
    stripe_conn, example_env: Path, example_dags_dir: Path
) -> None:
    # The step-by-step example: the create operator on its own, then the sensor and the download.
    dag_file = example_dags_dir / "example_stripe_balance_report_steps.py"
    dag_id = "example_stripe_balance_report_steps"
    ends = [DAY + dt.timedelta(days=i) for i in range(7)]

    results = [run_dag(dag_file, dag_id, logical_date=end) for end in ends]

    assert [r.state for r in results] == ["success"] * 7
    runs = stripe_conn.report_runs()
    assert len({run["id"] for run in runs}) == 7
    expected = [(int((end - dt.timedelta(days=1)).timestamp()), int(end.timestamp())) for end in ends]
    assert sorted((r["parameters"]["interval_start"], r["parameters"]["interval_end"]) for r in runs) == expected
    # Half-open and adjacent: each interval starts exactly where the previous one ended.
    assert all(a[1] == b[0] for a, b in itertools.pairwise(expected))
    files = sorted(p.name for p in (example_env / "balance.summary.1").iterdir())
    assert files == [f"2024-03-0{d}.csv" for d in range(1, 8)]
    by_start = {r["parameters"]["interval_start"]: r["id"] for r in runs}
    for result, (start, _) in zip(results, expected, strict=True):
        path = result.xcom("download_report")
        assert Path(path).read_bytes() == stripe_conn.result_content(by_start[start])

    rerun = run_dag(dag_file, dag_id, logical_date=ends[3])

    assert rerun.state == "success"
    assert len(stripe_conn.report_runs()) == 7
    assert len(creates(stripe_conn)) == 7
    assert rerun.xcom("create_report_run") == results[3].xcom("create_report_run")


def test_mapped_create_makes_one_run_per_report_type_and_the_mapped_sensor_and_download_follow(
    start_sim, example_env: Path, example_dags_dir: Path, finish_after_first_poll: Callable[[StripeSimulator], None]
) -> None:
    simulator = start_sim(run_delay=3600.0)
    report_types = ["balance.summary.1", "payouts.summary.1", "balance_change_from_activity.summary.1"]
    finish_after_first_poll(simulator)

    result = run_dag(
        example_dags_dir / "example_stripe_reports_deferrable.py", "example_stripe_reports_deferrable", logical_date=DAY
    )

    assert result.state == "success"
    for task_id in ("create_report_run", "wait_for_report_run", "download_report"):
        assert result.map_indexes(task_id) == [0, 1, 2]
    runs = {run["id"]: run for run in simulator.report_runs()}
    assert sorted(run["report_type"] for run in runs.values()) == sorted(report_types)
    for index, report_type in enumerate(report_types):
        run_id = result.xcom("create_report_run", map_index=index)
        assert runs[run_id]["report_type"] == report_type
        assert result.xcom("wait_for_report_run", map_index=index)["report_run_id"] == run_id
        path = Path(result.xcom("download_report", map_index=index))
        assert path == example_env / report_type / "2024-03-01.csv"
        assert path.read_bytes() == simulator.result_content(run_id)
        assert "[DAG TEST] running trigger in line" in result.log("wait_for_report_run", map_index=index)


# ---------------------------------------------------------------------------------------------
# Download


def download_dag(write_dag, dag_id: str, report_run_id: Any, destination: str, head: str = "") -> Path:
    return write_dag(
        f"{dag_id}.py",
        dag_source(
            dag_id,
            f'StripeDownloadReportRunOperator(task_id="download", report_run_id={report_run_id!r}, '
            f"destination={destination!r})",
            head=head,
        ),
    )


@pytest.mark.parametrize("scheme", ["", "file://"], ids=["local-path", "file-uri"])
def test_download_writes_the_result_file_to_a_templated_destination_and_returns_the_path(
    write_dag, stripe_conn, tmp_path: Path, scheme: str
) -> None:
    run = succeeded_run(stripe_conn)
    dag_id = "download_" + ("uri" if scheme else "path")
    destination = f"{scheme}{tmp_path}/out/{{{{ data_interval_start | ds }}}}/{{report_type}}.csv"
    dag_file = download_dag(write_dag, dag_id, run["id"], destination)

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success", result.log("download")
    written = tmp_path / "out" / "2024-03-01" / "balance.summary.1.csv"
    # A path comes back absolute; a file:// URI comes back as the URI that was asked for.
    assert result.xcom("download") == (f"file://{written}" if scheme else str(written))
    assert written.read_bytes() == stripe_conn.result_content(run["id"])
    assert os.listdir(written.parent) == [written.name]  # no temporary part left behind


def test_download_from_the_sensor_xcom_needs_no_second_get_of_the_run(write_dag, stripe_conn, tmp_path) -> None:
    from airflow_provider_reportruns.hooks.stripe import result_file_metadata

    run = succeeded_run(stripe_conn)
    dag_file = download_dag(write_dag, "download_meta", result_file_metadata(run), f"{tmp_path}/r.csv")
    stripe_conn.clear_requests()

    result = run_dag(dag_file, "download_meta", logical_date=DAY)

    assert result.state == "success", result.log("download")
    assert (tmp_path / "r.csv").read_bytes() == stripe_conn.result_content(run["id"])
    assert [r.kind for r in stripe_conn.requests()] == ["file_contents"]


@pytest.mark.parametrize("to", ["local", "object-storage"])
@pytest.mark.parametrize(
    ("expires_in", "what"),
    [(-60, "expired"), (3600, "unexpectedly-gone")],
    ids=["expired-per-expires_at", "404-before-expires_at"],
)
def test_a_stale_file_url_is_refreshed_by_fetching_the_run_again(
    write_dag, stripe_conn, tmp_path: Path, expires_in: int, what: str, to: str, request: pytest.FixtureRequest
) -> None:
    import time

    from airflow_provider_reportruns.hooks.stripe import result_file_metadata

    run = succeeded_run(stripe_conn)
    stale = result_file_metadata(run)
    # A URL that no longer serves anything (404), as an expired Stripe file link does.
    stale["url"] = f"{stripe_conn.url}/v1/files/file_expiredlinkexpiredlink/contents"
    stale["expires_at"] = int(time.time()) + expires_in
    dag_id = "download_stale_" + what.replace("-", "_") + "_" + to.replace("-", "_")
    memory = request.getfixturevalue("memory_filesystem") if to == "object-storage" else None
    destination = "memory://stale/r.csv" if memory is not None else f"{tmp_path}/r.csv"
    dag_file = download_dag(write_dag, dag_id, stale, destination)
    stripe_conn.clear_requests()

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success", result.log("download")
    written = memory.cat("/stale/r.csv") if memory is not None else (tmp_path / "r.csv").read_bytes()
    assert written == stripe_conn.result_content(run["id"])
    kinds = [r.kind for r in stripe_conn.requests()]
    assert "retrieve" in kinds
    assert kinds[-1] == "file_contents" and stripe_conn.requests()[-1].status == 200


@pytest.mark.parametrize(("times", "ok"), [(1, True), (2, False)], ids=["cut-once-retried", "cut-every-time"])
def test_a_cut_download_never_leaves_a_partial_file_at_the_destination(
    write_dag, start_sim, tmp_path: Path, times: int, ok: bool
) -> None:
    # max_retries=1: two attempts in all. Cut once, the second attempt completes the file.
    simulator = start_sim(extra={"max_retries": 1}, faults=[Fault("file_contents", "cut_download", times=times)])
    run = succeeded_run(simulator)
    out = tmp_path / "out"
    dag_id = f"download_cut_{times}"
    dag_file = download_dag(write_dag, dag_id, run["id"], f"{out}/r.csv")

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert simulator.fault_counts == {"cut_download": times}
    if ok:
        assert result.state == "success"
        assert (out / "r.csv").read_bytes() == simulator.result_content(run["id"])
        assert os.listdir(out) == ["r.csv"]
    else:
        assert result.task_state("download") == "failed"
        assert "broke off after" in result.log("download") or "is incomplete" in result.log("download")
        assert not out.exists() or os.listdir(out) == []


def test_a_size_other_than_stripes_result_size_fails_and_leaves_nothing(write_dag, start_sim, tmp_path) -> None:
    from airflow_provider_reportruns.hooks.stripe import result_file_metadata

    simulator = start_sim(extra={"max_retries": 0})  # a short count is retried; no need to wait for that here
    run = succeeded_run(simulator)
    metadata = result_file_metadata(run)
    metadata["size"] += 1
    out = tmp_path / "out"
    dag_file = download_dag(write_dag, "download_size", metadata, f"{out}/r.csv")

    result = run_dag(dag_file, "download_size", logical_date=DAY)

    assert result.task_state("download") == "failed"
    actual = simulator.result_size_of(run["id"])
    assert f"received {actual} bytes, Stripe announced {actual + 1} (result.size)" in result.log("download")
    assert os.listdir(out) == []


@pytest.mark.parametrize("cut", [False, True], ids=["complete", "cut-every-time"])
def test_download_to_object_storage_is_atomic_too(write_dag, start_sim, memory_filesystem: Any, cut: bool) -> None:
    faults = [Fault("file_contents", "cut_download", times=2)] if cut else []
    simulator = start_sim(extra={"max_retries": 1}, faults=faults)
    run = succeeded_run(simulator)
    dag_id = f"download_memory_{'cut' if cut else 'ok'}"
    dag_file = download_dag(write_dag, dag_id, run["id"], "memory://reports/{{ data_interval_start | ds }}.csv")

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    listing = memory_filesystem.ls("/reports", detail=False) if memory_filesystem.exists("/reports") else []
    if cut:
        assert result.task_state("download") == "failed"
        assert listing == []
    else:
        assert result.state == "success", result.log("download")
        assert result.xcom("download") == "memory://reports/2024-03-01.csv"
        assert [Path(p).name for p in listing] == ["2024-03-01.csv"]
        assert memory_filesystem.cat("/reports/2024-03-01.csv") == simulator.result_content(run["id"])


def _asset_events_in_db() -> list[tuple[str, dict[str, Any]]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        ).all()
        return [(uri, dict(extra or {})) for uri, extra in rows]


SHOW_OUTLET = """
class DownloadShowingOutlet(StripeDownloadReportRunOperator):
    # Hands the declared outlet and its event's extra on through XCom: Airflow 2's dag.test()
    # runs in test mode and records no dataset events to look at afterwards.
    def execute(self, context):
        path = super().execute(context)
        [outlet] = self.outlets
        extra = dict(context["outlet_events"][outlet].extra)
        context["ti"].xcom_push(key="outlet", value=[type(outlet).__name__, outlet.uri, extra])
        return path
"""


def test_download_declares_its_outlet_and_the_event_carries_uri_run_id_and_size(
    write_dag, stripe_conn, tmp_path: Path, airflow_db: None
) -> None:
    run = succeeded_run(stripe_conn)
    destination = f"{tmp_path}/outlet/{{{{ data_interval_start | ds }}}}.csv"
    dag_file = write_dag(
        "download_outlet.py",
        dag_source(
            "download_outlet",
            f'DownloadShowingOutlet(task_id="download", report_run_id={run["id"]!r}, destination={destination!r})',
            head=SHOW_OUTLET,
        ),
    )
    before = _asset_events_in_db() if AIRFLOW_3 else []

    result = run_dag(dag_file, "download_outlet", logical_date=DAY)

    assert result.state == "success", result.log("download")
    kind, uri, extra = result.xcom("download", key="outlet")
    assert kind == ("Asset" if AIRFLOW_3 else "Dataset")
    # The fixed part of the destination; Airflow 3 normalizes the trailing slash away.
    assert uri.rstrip("/") == f"file://{tmp_path}/outlet"
    expected_extra = {
        "uri": f"{tmp_path}/outlet/2024-03-01.csv",
        "report_run_id": run["id"],
        "size": stripe_conn.result_size_of(run["id"]),
    }
    assert extra == expected_extra
    if AIRFLOW_3:  # and the event Airflow stored carries it
        assert [e for e in _asset_events_in_db() if e not in before] == [(uri, expected_extra)]
