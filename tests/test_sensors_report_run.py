"""StripeReportRunSensor in real DAG runs (``dag.test()``, triggers inline) against the simulator:
poke, reschedule and deferrable modes share one status model."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _sim import after_first, sim, start_sim, stripe_conn  # noqa: F401
from airflow_harness import DagRunResult, run_dag

from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator

UTC = dt.timezone.utc
DAY = dt.datetime(2024, 3, 2, tzinfo=UTC)
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
MODES = ["poke", "reschedule", "deferrable"]
TRIGGER_RAN = "[DAG TEST] running trigger in line"

PREAMBLE = """\
from __future__ import annotations
import datetime as dt
try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow_provider_reportruns.operators.report_run import StripeCreateReportRunOperator
from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor
"""


def dag_source(dag_id: str, tasks: str) -> str:
    return (
        PREAMBLE + f"\nwith DAG({dag_id!r}, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "
        'schedule=CronDataIntervalTimetable("@daily", timezone="UTC"), catchup=False):\n'
        + textwrap.indent(textwrap.dedent(tasks).strip() + "\n", "    ")
    )


def sensor_dag(write_dag, dag_id: str, run_id: str, mode: str, **kwargs: Any) -> Path:
    """One sensor on ``run_id`` in ``mode`` (``deferrable`` means poke mode with deferrable=True)."""
    args = {"poke_interval": 0.2, "timeout": 60, **kwargs}
    if mode == "deferrable":
        args["deferrable"] = True
    else:
        args.update(mode=mode, deferrable=False)
    rendered = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return write_dag(
        f"{dag_id}.py",
        dag_source(dag_id, f'StripeReportRunSensor(task_id="wait", report_run_id={run_id!r}, {rendered})'),
    )


def whole_log(result: DagRunResult, task_id: str = "wait") -> str:
    """Every call of the task (reschedule mode runs it once per poke) in one text."""
    return "".join(result.logs(task_id))


def create_run(simulator: StripeSimulator, report_type: str = "balance.summary.1") -> str:
    from airflow_provider_reportruns.client import StripeReportingClient

    with StripeReportingClient(simulator.api_key, api_base=simulator.url) as client:
        return client.create_report_run(report_type, {"interval_start": MAR_1, "interval_end": MAR_2})["id"]


@pytest.fixture
def after_first_poll(after_first: Callable[..., None]) -> Callable[..., None]:
    """``after_first_poll(simulator, run_id, seconds, action)``: run ``action`` that long after the
    first GET of the run, however long the DAG took to get there (so the sensor sees it pending)."""
    return lambda simulator, run_id, seconds, action: after_first(
        simulator, lambda r: r.kind == "retrieve" and r.run_id == run_id, seconds, action
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_pending_run_is_waited_on_with_its_status_and_age_logged_until_it_succeeds(
    write_dag, start_sim, after_first_poll, mode: str
) -> None:
    simulator = start_sim(run_delay=3600.0)
    run_id = create_run(simulator)
    after_first_poll(simulator, run_id, 1.0, lambda: simulator.finish_report_run(run_id))
    dag_id = f"pending_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, run_id, mode), dag_id, logical_date=DAY)

    assert result.state == "success"
    polls = [r for r in simulator.requests() if r.kind == "retrieve" and r.run_id == run_id]
    assert len(polls) >= 2, "the sensor should have seen the run pending before it succeeded"
    assert polls[-1].timestamp - polls[0].timestamp >= 0.9
    log = whole_log(result)
    if mode == "deferrable":
        assert TRIGGER_RAN in log
    else:
        ages = re.findall(rf"Report run {run_id} \(balance.summary.1\) is pending, (\d+) s after it was created", log)
        assert len(ages) == len(polls) - 1, "every poke that saw the run pending logs it"
        assert [int(a) for a in ages] == sorted(int(a) for a in ages)
    assert f"Report run {run_id} (balance.summary.1) is succeeded" in log


def test_a_succeeded_run_passes_and_pushes_its_result_file_metadata(write_dag, stripe_conn) -> None:
    run_id = create_run(stripe_conn)
    stripe_conn.finish_report_run(run_id)

    result = run_dag(sensor_dag(write_dag, "succeeded", run_id, "poke"), "succeeded", logical_date=DAY)

    assert result.state == "success"
    file = stripe_conn.report_run(run_id)["result"]
    assert result.xcom("wait") == {
        "report_run_id": run_id,
        "report_type": "balance.summary.1",
        "id": file["id"],
        "url": file["url"],
        "size": file["size"],
        "type": "csv",
        "filename": file["filename"],
        "expires_at": file["expires_at"],
    }
    assert file["size"] == stripe_conn.result_size_of(run_id) > 0


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_run_fails_the_task_with_stripes_error_text_and_the_run_id(
    write_dag, start_sim, after_first_poll, mode: str
) -> None:
    simulator = start_sim(run_delay=3600.0)
    run_id = create_run(simulator)
    # Pending at the first check (so the deferrable sensor defers), failed shortly after.
    after_first_poll(
        simulator,
        run_id,
        0.5,
        lambda: simulator.finish_report_run(run_id, status="failed", error="Simulated: ledger unavailable."),
    )
    dag_id = f"failed_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, run_id, mode), dag_id, logical_date=DAY)

    assert result.task_state("wait") == "failed"
    log = whole_log(result)
    assert f"Stripe report run {run_id} (balance.summary.1) failed: Simulated: ledger unavailable." in log
    assert (TRIGGER_RAN in log) is (mode == "deferrable")


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_a_failed_run_is_not_retried_even_when_the_sensor_has_retries(write_dag, start_sim, mode: str) -> None:
    simulator = start_sim(fail_report_types=["balance.summary.1"])
    run_id = create_run(simulator)
    simulator.finish_report_run(run_id, status="failed", error="Simulated: ledger unavailable.")
    dag_id = f"failed_no_retry_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, run_id, mode, retries=2, retry_delay=0), dag_id, logical_date=DAY)

    assert result.task_state("wait") == "failed"
    assert len(result.logs("wait")) == 1  # no second try: Stripe's answer cannot change
    assert "Simulated: ledger unavailable." in whole_log(result)


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_an_unknown_status_is_logged_and_waited_on_never_taken_for_success(
    write_dag, start_sim, after_first_poll, mode: str
) -> None:
    simulator = start_sim(run_delay=3600.0)
    run_id = create_run(simulator)
    simulator.finish_report_run(run_id, status="weird")
    after_first_poll(simulator, run_id, 1.0, lambda: simulator.finish_report_run(run_id))
    dag_id = f"unknown_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, run_id, mode), dag_id, logical_date=DAY)

    assert result.state == "success"
    statuses = [r for r in simulator.requests() if r.kind == "retrieve"]
    assert len(statuses) >= 3
    log = whole_log(result)
    if mode == "deferrable":
        assert f"Report run {run_id} has status 'weird', unknown to this provider; waiting on." in log
    else:
        assert f"Report run {run_id} (balance.summary.1) is weird" in log
        assert "a status this provider does not know; waiting on" in log
    assert result.xcom("wait")["report_run_id"] == run_id


def test_an_already_succeeded_run_does_not_defer(write_dag, stripe_conn) -> None:
    run_id = create_run(stripe_conn)
    stripe_conn.finish_report_run(run_id)
    stripe_conn.clear_requests()

    result = run_dag(sensor_dag(write_dag, "no_defer", run_id, "deferrable"), "no_defer", logical_date=DAY)

    assert result.state == "success"
    assert TRIGGER_RAN not in result.log_text
    assert [r.kind for r in stripe_conn.requests()] == ["retrieve"]
    assert result.xcom("wait")["report_run_id"] == run_id


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("poke", "Stripe report run {id} did not finish within the sensor timeout of 1 s: last status 'pending'."),
        (
            "reschedule",
            "Stripe report run {id} did not finish within the sensor timeout of 1 s: last status 'pending'.",
        ),
        ("deferrable", "Stripe report run {id} did not finish in time: last status 'pending' after waiting 1 s."),
    ],
    ids=MODES,
)
def test_a_timeout_names_the_run_its_last_status_and_the_time_waited(
    write_dag, start_sim, mode: str, message: str
) -> None:
    simulator = start_sim(run_delay=3600.0)
    run_id = create_run(simulator)
    dag_id = f"timeout_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, run_id, mode, timeout=1), dag_id, logical_date=DAY)

    assert result.task_state("wait") == "failed"
    assert message.format(id=run_id) in whole_log(result)


@pytest.mark.parametrize(
    "reference",
    ["create.output", "\"{{ ti.xcom_pull(task_ids='create_report_run') }}\""],
    ids=["xcomarg", "template"],
)
def test_the_run_id_comes_from_the_create_task_as_xcomarg_or_template(write_dag, stripe_conn, reference: str) -> None:
    dag_id = "from_create_" + ("xcomarg" if reference == "create.output" else "template")
    dag_file = write_dag(
        f"{dag_id}.py",
        dag_source(
            dag_id,
            f"""
            create = StripeCreateReportRunOperator(task_id="create_report_run", report_type="balance.summary.1")
            wait = StripeReportRunSensor(task_id="wait", report_run_id={reference}, poke_interval=0.2, timeout=60)
            create >> wait
            """,
        ),
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success"
    [run] = stripe_conn.report_runs()
    assert result.xcom("create_report_run") == run["id"]
    assert result.xcom("wait")["report_run_id"] == run["id"]
    assert result.rendered("wait")["report_run_id"] == run["id"]


def test_a_deferring_sensor_leaves_a_poke_interval_between_its_poke_and_the_triggers_first_poll(
    write_dag, start_sim, after_first_poll
) -> None:
    # The poke has just seen the run pending: the trigger asking again within milliseconds would be
    # a request repeated without need. Finished 1.5 s after the poke: polls at ~0 s, ~1 s, ~2 s.
    simulator = start_sim(run_delay=3600.0)
    run_id = create_run(simulator)
    after_first_poll(simulator, run_id, 1.5, lambda: simulator.finish_report_run(run_id))

    result = run_dag(
        sensor_dag(write_dag, "first_poll_at", run_id, "deferrable", poke_interval=1.0),
        "first_poll_at",
        logical_date=DAY,
    )

    assert result.state == "success"
    assert TRIGGER_RAN in whole_log(result)
    polls = [r for r in simulator.requests() if r.kind == "retrieve" and r.run_id == run_id]
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(polls)]
    assert len(polls) == 3, gaps
    assert all(gap >= 0.9 for gap in gaps), gaps


def test_a_failed_run_fails_the_very_first_poke(stripe_conn) -> None:
    """Within one request, not after a sensor timeout: a poke that kept waiting on ``failed``
    would return False here."""
    from airflow_provider_reportruns._compat import AirflowFailException
    from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor

    run_id = create_run(stripe_conn)
    stripe_conn.finish_report_run(run_id, status="failed", error="Simulated: ledger unavailable.")
    sensor = StripeReportRunSensor(task_id="wait", report_run_id=run_id, deferrable=False)

    with pytest.raises(AirflowFailException, match=re.escape("Simulated: ledger unavailable.")):
        sensor.poke({})  # type: ignore[arg-type]  # poke reads nothing from the context
    assert [r.kind for r in stripe_conn.requests() if r.kind == "retrieve"] == ["retrieve"]


@pytest.mark.parametrize("mode", MODES)
def test_a_stripe_outage_during_the_wait_is_waited_through_in_every_mode(
    write_dag, start_sim, after_first_poll, mode: str
) -> None:
    simulator = start_sim(run_delay=3600.0, extra={"max_retries": 0})
    run_id = create_run(simulator)

    def outage_then_success() -> None:
        simulator.add_fault(Fault("retrieve", "503", times=3))
        simulator.finish_report_run(run_id)

    after_first_poll(simulator, run_id, 0.0, outage_then_success)
    dag_id = f"outage_{mode}"

    result = run_dag(sensor_dag(write_dag, dag_id, run_id, mode, retries=0), dag_id, logical_date=DAY)

    assert result.task_state("wait") == "success", whole_log(result)
    assert [r.status for r in simulator.requests() if r.kind == "retrieve"].count(503) == 3
