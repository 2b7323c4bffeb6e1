"""The one wait model (``waiting.py``): its predicates and its rule for Stripe errors, and that
every wait obeys them: a Stripe outage shorter than the timeout fails no wait, a permanent error
fails the task on its first try."""

from __future__ import annotations

import datetime as dt
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _sim import after_first, sim, start_sim, stripe_conn  # noqa: F401
from airflow_harness import run_dag

from airflow_provider_reportruns.client import (
    StripeDataNotReadyError,
    StripeError,
    StripePermanentError,
    StripeTransientError,
)
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator
from airflow_provider_reportruns.waiting import (
    data_covers,
    data_never_covers,
    error_kind,
    poll_until,
    run_outcome,
    waits_through,
)

UTC = dt.timezone.utc
DAY = dt.datetime(2024, 3, 2, tzinfo=UTC)  # logical date; the daily data interval is [Mar 1, Mar 2)
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
OUTAGE_SECONDS = 45.0

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
from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator
from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor
from airflow_provider_reportruns.sensors.report_type import StripeReportDataAvailableSensor
"""


def dag_file(write_dag: Callable[[str, str], Path], dag_id: str, task: str, *, retries: int = 3) -> Path:
    return write_dag(
        f"{dag_id}.py",
        PREAMBLE + f"\nwith DAG({dag_id!r}, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "
        'schedule=CronDataIntervalTimetable("@daily", timezone="UTC"), catchup=False, '
        f"default_args={{'retries': {retries}, 'retry_delay': dt.timedelta(seconds=0)}}):\n"
        + textwrap.indent(textwrap.dedent(task).strip() + "\n", "    "),
    )


def of_kind(simulator: StripeSimulator, kind: str) -> list[Any]:
    return [r for r in simulator.requests() if r.kind == kind]


# ---------------------------------------------------------------------------------------------
# The predicates and the rule


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("succeeded", "succeeded"), ("failed", "failed"), ("pending", None), ("archived", None), (None, None)],
)
def test_a_run_is_finished_only_when_succeeded_or_failed(status: Any, outcome: str | None) -> None:
    assert run_outcome({"id": "frr_1", "status": status}) == outcome


@pytest.mark.parametrize(
    ("available_end", "covers"), [(MAR_2 - 1, False), (MAR_2, True), (MAR_2 + 1, True), (None, False), ("x", False)]
)
def test_data_covers_the_interval_once_data_available_end_reaches_its_end(available_end: Any, covers: bool) -> None:
    assert data_covers({"data_available_end": available_end}, MAR_2) is covers


def test_an_interval_starting_before_data_available_start_is_never_covered() -> None:
    assert data_never_covers({"data_available_start": MAR_2}, MAR_1)
    assert not data_never_covers({"data_available_start": MAR_1}, MAR_1)
    assert not data_never_covers({"data_available_start": MAR_2}, None)  # a type without an interval


@pytest.mark.parametrize(
    ("error", "waited_through", "kind"),
    [
        (StripeTransientError("503"), True, "transient"),
        (StripeDataNotReadyError("later"), False, "data_not_ready"),
        (StripePermanentError("401"), False, "permanent"),
        (StripeError("disk full"), False, None),
        (ValueError("bug"), False, None),
    ],
)
def test_only_transient_errors_are_waited_through(error: Exception, waited_through: bool, kind: str | None) -> None:
    assert waits_through(error) is waited_through
    assert error_kind(error) == kind


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)

    warning = info


def test_the_poll_loop_waits_through_transient_errors_until_the_answer_comes() -> None:
    answers: list[Any] = [StripeTransientError("503"), StripeTransientError("503"), {"n": 1}, {"n": 2}]

    def fetch() -> dict[str, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    log, slept = Log(), []
    result = poll_until(
        fetch,
        lambda value: value["n"] == 2,
        deadline=float("inf"),
        first_delay=5.0,
        interval=1.0,
        log=log,
        describe=str,
        sleep=slept.append,
    )

    assert (result.done, result.value) == (True, {"n": 2})
    assert slept == [5.0, 1.0, 1.0, 1.0]
    assert sum("still waiting: 503" in line for line in log.lines) == 2


def test_the_poll_loop_ends_at_once_on_a_permanent_error() -> None:
    def fetch() -> Any:
        raise StripePermanentError("Invalid API Key provided")

    with pytest.raises(StripePermanentError, match="Invalid API Key"):
        poll_until(
            fetch, bool, deadline=float("inf"), first_delay=0, interval=0, log=Log(), describe=str, sleep=lambda s: None
        )


def test_the_poll_loop_gives_up_at_the_deadline_with_the_last_value_seen() -> None:
    answers: list[Any] = [{"n": 1}, StripeTransientError("503")]

    def fetch() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    result = poll_until(
        fetch, lambda v: False, deadline=0.0, first_delay=0, interval=0, log=Log(), describe=str, sleep=lambda s: None
    )
    assert (result.done, result.value) == (False, {"n": 1})


# ---------------------------------------------------------------------------------------------
# A Stripe outage in the middle of a worker-side wait


@pytest.fixture
def outage() -> Iterator[Callable[[StripeSimulator, float], None]]:
    """``outage(simulator, seconds)``: every request is answered 503 from now for that long."""
    timers: list[threading.Timer] = []

    def start(simulator: StripeSimulator, seconds: float) -> None:
        simulator.add_fault(Fault("any", "503"))
        timer = threading.Timer(seconds, simulator.clear_faults)
        timer.daemon = True
        timer.start()
        timers.append(timer)

    yield start
    for timer in timers:
        timer.cancel()


@pytest.mark.parametrize("operator", ["create", "store"])
def test_a_45_second_outage_in_the_middle_of_the_wait_fails_neither_operator(
    write_dag, start_sim, after_first, outage, tmp_path: Path, operator: str
) -> None:
    # The client's own retries give up after one retry, seconds into the outage: the wait itself
    # must carry the task through the rest.
    simulator = start_sim(run_delay=10.0, extra={"max_retries": 1})
    if operator == "create":
        task = (
            'StripeCreateReportRunOperator(task_id="task", report_type="balance.summary.1", '
            "wait_for_completion=True, deferrable=False, poll_interval=2, timeout=600)"
        )
    else:
        destination = str(tmp_path / "out" / "{report_run_id}.csv")
        task = (
            'StripeReportToStorageOperator(task_id="task", report_type="balance.summary.1", '
            f"destination={destination!r}, deferrable=False, poll_interval=2, timeout=600)"
        )
    dag_id = f"outage_{operator}"
    path = dag_file(write_dag, dag_id, task)
    # The first status check sees the run pending; the outage begins right after it.
    after_first(simulator, lambda r: r.kind == "retrieve", 0.0, lambda: outage(simulator, OUTAGE_SECONDS))

    result = run_dag(path, dag_id, logical_date=DAY)

    assert result.task_state("task") == "success", result.log("task")
    assert len(result.logs("task")) == 1, "the task needed a retry"
    refused = [r for r in simulator.requests() if r.status == 503]
    assert refused and refused[-1].timestamp - refused[0].timestamp >= OUTAGE_SECONDS - 5
    assert "Stripe did not answer this check; still waiting" in result.log("task")
    [run] = simulator.report_runs()
    assert len(of_kind(simulator, "create")) == 1
    if operator == "create":
        assert result.xcom("task") == run["id"]
    else:
        assert Path(result.xcom("task")).read_bytes()


# ---------------------------------------------------------------------------------------------
# Permanent errors fail on the first try


def test_a_typo_in_the_report_type_fails_once_with_one_create_and_suggests_the_name(write_dag, stripe_conn) -> None:
    path = dag_file(
        write_dag,
        "typo",
        'StripeCreateReportRunOperator(task_id="task", report_type="payout_reconcilation.itemized.5")',
    )

    result = run_dag(path, "typo", logical_date=DAY)

    assert result.task_state("task") == "failed"
    assert len(result.logs("task")) == 1, "a typo was retried"
    assert len(of_kind(stripe_conn, "create")) == 1
    assert len(of_kind(stripe_conn, "report_types")) == 1
    assert "did you mean `payout_reconciliation.itemized.5`" in result.log("task")


def test_when_the_report_types_cannot_be_read_the_typo_keeps_stripes_message(write_dag, start_sim) -> None:
    simulator = start_sim(faults=[Fault("report_types", "500_should_retry_false")])
    path = dag_file(
        write_dag, "typo_no_list", 'StripeCreateReportRunOperator(task_id="task", report_type="balance.sumary.1")'
    )

    result = run_dag(path, "typo_no_list", logical_date=DAY)

    assert result.task_state("task") == "failed"
    assert len(result.logs("task")) == 1
    log = result.log("task")
    assert "Invalid report_type: `balance.sumary.1` is not a valid report type." in log
    assert "did you mean" not in log
    assert [r.status for r in of_kind(simulator, "report_types")] == [500]  # asked once, not retried


@pytest.mark.parametrize(
    ("task", "message"),
    [
        pytest.param(
            'StripeCreateReportRunOperator(task_id="task", report_type="balance.summary.1", '
            "interval_start=dt.datetime(2024, 3, 1), interval_end=dt.datetime(2024, 3, 2))",
            "naive",
            id="naive-datetime",
        ),
        pytest.param(
            'StripeCreateReportRunOperator(task_id="task", report_type="balance.summary.1", '
            'interval_start="2024-03-02T00:00:00Z", interval_end="2024-03-01T00:00:00Z")',
            "must be after interval_start",
            id="reversed-interval",
        ),
        pytest.param(
            'StripeCreateReportRunOperator(task_id="task", report_type="balance.summary.1", parameters=["usd"])',
            "parameters must be a mapping, got list.",
            id="parameters-not-a-mapping",
        ),
        pytest.param(
            'StripeReportToStorageOperator(task_id="task", report_type="balance.summary.1", destination="/tmp/x.csv",'
            " interval_start=dt.datetime(2024, 3, 1), interval_end=dt.datetime(2024, 3, 2))",
            "naive",
            id="one-task-naive-datetime",
        ),
        pytest.param(
            'StripeDownloadReportRunOperator(task_id="task", report_run_id="12345", destination="/tmp/x.csv")',
            "report_run_id must be a report run id (frr_…) or the report run sensor's XCom, got '12345'.",
            id="malformed-run-id",
        ),
        pytest.param(
            'StripeReportRunSensor(task_id="task", report_run_id="po_notARun", poke_interval=0.1, timeout=30)',
            "report_run_id 'po_notARun' is not a Stripe report run id (they start with 'frr_').",
            id="sensor-malformed-run-id",
        ),
        pytest.param(
            'StripeReportRunSensor(task_id="task", report_run_id="frr_doesNotExist", poke_interval=0.1, timeout=30)',
            "No such reporting.report_run: 'frr_doesNotExist'",
            id="sensor-unknown-run",
        ),
        pytest.param(
            'StripeReportRunSensor(task_id="task", report_run_id="frr_doesNotExist", poke_interval=0.1, timeout=30,'
            " deferrable=True)",
            "No such reporting.report_run: 'frr_doesNotExist'",
            id="deferrable-sensor-unknown-run",
        ),
        pytest.param(
            'StripeReportDataAvailableSensor(task_id="task", report_type="balance.sumary.1", poke_interval=0.1,'
            " timeout=30, deferrable=True)",
            "balance.sumary.1",
            id="deferrable-data-sensor-unknown-type",
        ),
    ],
)
def test_bad_arguments_and_permanent_refusals_fail_on_the_first_try(
    write_dag, stripe_conn, task: str, message: str
) -> None:
    path = dag_file(write_dag, "permanent", task)

    result = run_dag(path, "permanent", logical_date=DAY)

    assert result.task_state("task") == "failed"
    assert len(result.logs("task")) == 1, "retried although the answer could not change"
    assert message in result.log("task")
    assert not of_kind(stripe_conn, "create")


def test_a_parameter_the_report_type_refuses_fails_once_with_one_create(write_dag, stripe_conn) -> None:
    path = dag_file(
        write_dag,
        "refused_parameter",
        'StripeCreateReportRunOperator(task_id="task", report_type="balance.summary.1", parameters={"payout": "po_1"})',
    )

    result = run_dag(path, "refused_parameter", logical_date=DAY)

    assert result.task_state("task") == "failed"
    assert len(result.logs("task")) == 1
    assert len(of_kind(stripe_conn, "create")) == 1
    assert "does not accept the parameter `payout`" in result.log("task")


def test_a_transient_create_failure_keeps_airflows_retries(write_dag, start_sim) -> None:
    simulator = start_sim(extra={"max_retries": 0}, faults=[Fault("create", "503", times=1)])
    path = dag_file(
        write_dag, "transient", 'StripeCreateReportRunOperator(task_id="task", report_type="balance.summary.1")'
    )

    result = run_dag(path, "transient", logical_date=DAY)

    assert result.task_state("task") == "success"
    assert len(result.logs("task")) == 2
    assert len(simulator.report_runs()) == 1


@pytest.mark.parametrize("task", ["sensor", "create"])
def test_a_permanent_error_in_the_trigger_fails_the_deferred_task_without_retries(
    write_dag, start_sim, after_first, task: str
) -> None:
    simulator = start_sim(run_delay=3600.0)
    if task == "sensor":
        from airflow_provider_reportruns.client import StripeReportingClient

        with StripeReportingClient(simulator.api_key, api_base=simulator.url) as client:
            run_id = client.create_report_run("balance.summary.1", {"interval_start": MAR_1, "interval_end": MAR_2})[
                "id"
            ]
        source = (
            f'StripeReportRunSensor(task_id="task", report_run_id={run_id!r}, poke_interval=0.2, timeout=60, '
            "deferrable=True)"
        )
    else:
        source = (
            'StripeCreateReportRunOperator(task_id="task", report_type="balance.summary.1", '
            "wait_for_completion=True, deferrable=True, poll_interval=0.2, timeout=60)"
        )
    # The task's own first look (its poke, or its create) succeeds; every look after it, the
    # trigger's, is refused for good.
    first_look = "retrieve" if task == "sensor" else "create"
    simulator.clear_requests()
    after_first(
        simulator,
        lambda r: r.kind == first_look,
        0.0,
        lambda: simulator.add_fault(Fault("retrieve", "500_should_retry_false")),
    )
    dag_id = f"trigger_permanent_{task}"

    result = run_dag(dag_file(write_dag, dag_id, source), dag_id, logical_date=DAY)

    assert result.task_state("task") == "failed"
    assert len(result.logs("task")) == 1, "a permanent error met in the triggerer was retried"
    assert "[DAG TEST] running trigger in line" in result.log("task")
    assert "500" in result.log("task")
