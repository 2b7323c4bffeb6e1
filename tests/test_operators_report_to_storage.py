"""StripeReportToStorageOperator in real DAG runs (``dag.test()`` on SQLite, triggers inline) against
the local Stripe simulator over HTTP: which requests one task makes, what it reuses, how it waits for
Stripe's data and for the run, and what lands at the destination."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import textwrap
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _sim import after_first, sim, start_sim, stripe_conn  # noqa: F401
from airflow_harness import DagRunResult, airflow_major, run_dag

from airflow_provider_reportruns.testing.simulator import DEFAULT_FAILURE_MESSAGE, Fault, StripeSimulator

AIRFLOW_3 = airflow_major() >= 3
UTC = dt.timezone.utc
DAY = dt.datetime(2024, 3, 2, tzinfo=UTC)  # logical date; the daily data interval is [Mar 1, Mar 2)
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
HOUR = 3600
MODES = [False, True]
MODE_IDS = ["poll", "deferrable"]
TRIGGER_RAN = "[DAG TEST] running trigger in line"

PREAMBLE = """\
from __future__ import annotations
import datetime as dt
try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator
"""


def store_dag(write_dag, dag_id: str, destination: str, **kwargs: Any) -> Path:
    """A daily DAG (previous-UTC-day intervals) with one ``store`` task for balance.summary.1."""
    args = {"report_type": "balance.summary.1", "destination": destination, **kwargs}
    rendered = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return write_dag(
        f"{dag_id}.py",
        PREAMBLE + f"\nwith DAG({dag_id!r}, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "
        'schedule=CronDataIntervalTimetable("@daily", timezone="UTC"), catchup=False, '
        "default_args={'retries': 0}):\n"
        + textwrap.indent(f'StripeReportToStorageOperator(task_id="store", {rendered})\n', "    "),
    )


def mode_id(deferrable: bool) -> str:
    return "deferrable" if deferrable else "poll"


def whole_log(result: DagRunResult) -> str:
    return "".join(result.logs("store"))


def kinds(simulator: StripeSimulator) -> list[str]:
    return [r.kind for r in simulator.requests()]


def collapsed(sequence: list[str]) -> list[str]:
    """Repeats folded into one: ``[a, b, b, c] -> [a, b, c]``."""
    return [kind for kind, _ in itertools.groupby(sequence)]


def of_kind(simulator: StripeSimulator, kind: str) -> list[Any]:
    return [r for r in simulator.requests() if r.kind == kind]


def refused_create(request: Any) -> bool:
    return request.kind == "create" and request.status == 400


# ---------------------------------------------------------------------------------------------
# The happy path: one list, one create, a poll per poll interval, one download


@pytest.mark.parametrize("deferrable", MODES, ids=MODE_IDS)
def test_one_task_lists_creates_polls_once_per_interval_and_stores_the_file_without_reading_the_report_type(
    write_dag, start_sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    # The run takes 1.5 s, polled every 1 s: pending at ~1 s, succeeded at ~2 s -> ceil(1.5/1) = 2 polls.
    simulator = start_sim(run_delay=1.5)
    monkeypatch.chdir(tmp_path)  # a relative destination comes back absolute
    dag_id = f"store_ok_{mode_id(deferrable)}"
    dag_file = store_dag(
        write_dag, dag_id, "out/{{ data_interval_start | ds }}.csv", deferrable=deferrable, poll_interval=1.0
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success", whole_log(result)
    [run] = simulator.report_runs()
    assert run["status"] == "succeeded"
    assert run["parameters"] == {"interval_start": MAR_1, "interval_end": MAR_2}
    written = tmp_path / "out" / "2024-03-01.csv"
    assert written.read_bytes() == simulator.result_content(run["id"])
    assert os.listdir(written.parent) == [written.name]  # no temporary part left behind
    assert result.xcom("store") == str(written)  # absolute path
    assert result.stored_run_id("store") == run["id"]
    assert ("store", -1, "report_run_id") not in result.xcoms  # the run id is in the log, not XCom
    # Exactly these requests, in this order: no report type read when Stripe accepts the create.
    assert kinds(simulator) == ["list", "create", "retrieve", "retrieve", "file_contents"]
    [create] = of_kind(simulator, "create")
    first_poll, last_poll = of_kind(simulator, "retrieve")
    # The create's answer is a fresh status: the first poll comes one poll interval later.
    assert first_poll.timestamp - create.timestamp >= 0.9
    assert last_poll.timestamp - first_poll.timestamp >= 0.9
    assert (TRIGGER_RAN in whole_log(result)) is deferrable


def test_after_quick_runs_of_the_report_type_the_first_poll_comes_at_once_in_the_worker_even_deferrable(
    write_dag, stripe_conn, tmp_path: Path
) -> None:
    # stripe_conn's runs finish at once; poll_interval 6 s would cost the backfill 6 s per day if
    # the first poll waited for it, and a deferral round trip for a poll due now.
    dag_file = store_dag(
        write_dag,
        "store_quick",
        f"{tmp_path}/{{{{ data_interval_start | ds }}}}.csv",
        deferrable=True,
        poll_interval=6,
    )
    first = run_dag(dag_file, "store_quick", logical_date=DAY)  # no history yet: defers, polls after 6 s
    stripe_conn.clear_requests()
    started = time.monotonic()

    second = run_dag(dag_file, "store_quick", logical_date=DAY + dt.timedelta(days=1))

    assert first.state == second.state == "success", whole_log(second)
    assert TRIGGER_RAN in whole_log(first)
    assert TRIGGER_RAN not in whole_log(second)
    assert time.monotonic() - started < 5.5
    assert kinds(stripe_conn) == ["list", "create", "retrieve", "file_contents"]
    [create] = of_kind(stripe_conn, "create")
    [poll] = of_kind(stripe_conn, "retrieve")
    assert poll.timestamp - create.timestamp < 2.0
    run_id = next(r["id"] for r in stripe_conn.report_runs() if r["parameters"]["interval_start"] == MAR_2)
    assert second.stored_run_id("store") == run_id


@pytest.mark.parametrize("scheme", ["memory", "file-uri"])
def test_an_object_storage_destination_receives_the_file_and_is_returned_as_the_uri(
    write_dag, stripe_conn, tmp_path: Path, request: pytest.FixtureRequest, scheme: str
) -> None:
    if scheme == "memory":
        memory = request.getfixturevalue("memory_filesystem")
        destination = "memory://reports/{{ data_interval_start | ds }}/{report_type}.csv"
        expected = "memory://reports/2024-03-01/balance.summary.1.csv"
    else:
        memory = None
        destination = f"file://{tmp_path}/reports/{{{{ data_interval_start | ds }}}}/{{report_type}}.csv"
        expected = f"file://{tmp_path}/reports/2024-03-01/balance.summary.1.csv"
    dag_id = f"store_{scheme.replace('-', '_')}"

    result = run_dag(store_dag(write_dag, dag_id, destination, poll_interval=0.1), dag_id, logical_date=DAY)

    assert result.state == "success", whole_log(result)
    [run] = stripe_conn.report_runs()
    assert result.xcom("store") == expected
    if memory is not None:
        assert [Path(p).name for p in memory.ls("/reports/2024-03-01", detail=False)] == ["balance.summary.1.csv"]
        written = memory.cat("/reports/2024-03-01/balance.summary.1.csv")
    else:
        written = (tmp_path / "reports" / "2024-03-01" / "balance.summary.1.csv").read_bytes()
    assert written == stripe_conn.result_content(run["id"])


# ---------------------------------------------------------------------------------------------
# No duplicates


def test_running_the_same_interval_again_creates_no_second_report_run(write_dag, stripe_conn, tmp_path: Path) -> None:
    dag_file = store_dag(
        write_dag, "store_rerun", f"{tmp_path}/{{{{ data_interval_start | ds }}}}.csv", poll_interval=0.1
    )

    first = run_dag(dag_file, "store_rerun", logical_date=DAY)
    stripe_conn.clear_requests()
    second = run_dag(dag_file, "store_rerun", logical_date=DAY)

    assert first.state == second.state == "success"
    [run] = stripe_conn.report_runs()
    assert first.stored_run_id("store") == second.stored_run_id("store") == run["id"]
    # The lookup finds the succeeded run: nothing to create and nothing to wait for.
    assert kinds(stripe_conn) == ["list", "file_contents"]
    assert f"Reusing Stripe report run {run['id']}" in whole_log(second)
    assert (tmp_path / "2024-03-01.csv").read_bytes() == stripe_conn.result_content(run["id"])


def test_a_three_day_backfill_run_twice_makes_three_report_runs(write_dag, stripe_conn, tmp_path: Path) -> None:
    dag_file = store_dag(
        write_dag, "store_backfill", f"{tmp_path}/{{{{ data_interval_start | ds }}}}.csv", poll_interval=0.1
    )
    days = [DAY + dt.timedelta(days=i) for i in range(3)]

    first = [run_dag(dag_file, "store_backfill", logical_date=day) for day in days]
    runs = {run["parameters"]["interval_start"]: run for run in stripe_conn.report_runs()}
    second = [run_dag(dag_file, "store_backfill", logical_date=day) for day in days]

    assert [r.state for r in first + second] == ["success"] * 6
    assert len(stripe_conn.report_runs()) == 3
    assert len(of_kind(stripe_conn, "create")) == 3
    starts = [int((day - dt.timedelta(days=1)).timestamp()) for day in days]
    assert sorted(runs) == starts
    for before, again, start in zip(first, second, starts, strict=True):
        run_id = runs[start]["id"]
        assert before.stored_run_id("store") == again.stored_run_id("store") == run_id
        name = dt.datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m-%d.csv")
        assert again.xcom("store") == str(tmp_path / name)
        assert (tmp_path / name).read_bytes() == stripe_conn.result_content(run_id)


# ---------------------------------------------------------------------------------------------
# Waiting for Stripe's data


@pytest.mark.parametrize("deferrable", MODES, ids=MODE_IDS)
def test_a_refused_interval_is_waited_for_and_then_created_once_under_a_new_idempotency_key(
    write_dag, start_sim, after_first, tmp_path: Path, deferrable: bool
) -> None:
    simulator = start_sim(data_available_end=MAR_2 - 6 * HOUR)
    moved: list[float] = []

    def refresh() -> None:
        moved.append(time.time())
        simulator.set_data_available_end(MAR_2 + 6 * HOUR)

    after_first(simulator, refused_create, 1.0, refresh)
    dag_id = f"store_data_later_{mode_id(deferrable)}"
    dag_file = store_dag(
        write_dag,
        dag_id,
        f"{tmp_path}/r.csv",
        deferrable=deferrable,
        poll_interval=0.2,
        data_poll_interval=0.3,
        data_timeout=30,
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success", whole_log(result)
    assert moved, "the task finished before Stripe's data was refreshed"
    assert collapsed(kinds(simulator)) == [
        "list",
        "create",
        "report_type",
        "list",
        "create",
        "retrieve",
        "file_contents",
    ]
    refused, accepted = of_kind(simulator, "create")
    assert (refused.status, accepted.status) == (400, 200)
    # Stripe stores the 400 under the first key; the same key again would only replay it.
    assert refused.headers["Idempotency-Key"] != accepted.headers["Idempotency-Key"]
    assert not accepted.replayed
    checks = of_kind(simulator, "report_type")
    assert checks[0].timestamp - refused.timestamp >= 0.27, "Stripe had just said no: the first check waits"
    assert [c for c in checks if c.timestamp < moved[0]], "no check saw the data still missing"
    assert checks[-1].timestamp >= moved[0]
    [run] = simulator.report_runs()
    assert run["parameters"] == {"interval_start": MAR_1, "interval_end": MAR_2}
    assert result.stored_run_id("store") == run["id"]
    assert (tmp_path / "r.csv").read_bytes() == simulator.result_content(run["id"])
    log = whole_log(result)
    assert "is only available through 2024-03-01 18:00:00 UTC" in log  # Stripe's own words, logged
    assert (TRIGGER_RAN in log) is deferrable


@pytest.mark.parametrize("deferrable", MODES, ids=MODE_IDS)
def test_a_run_another_dag_run_created_during_the_data_wait_is_reused_not_duplicated(
    write_dag, start_sim, after_first, tmp_path: Path, deferrable: bool
) -> None:
    import requests

    simulator = start_sim(data_available_end=MAR_2 - 6 * HOUR, run_delay=0.3)
    made: list[str] = []

    def refresh_and_create_elsewhere() -> None:
        # Stripe refreshes; another DAG run of the same interval gets its create in first.
        simulator.set_data_available_end(MAR_2)
        form = {
            "report_type": "balance.summary.1",
            "parameters[interval_start]": MAR_1,
            "parameters[interval_end]": MAR_2,
        }
        answer = requests.post(
            f"{simulator.url}/v1/reporting/report_runs",
            data=form,
            headers={"Authorization": f"Bearer {simulator.api_key}"},
        )
        made.append(answer.json()["id"])

    after_first(simulator, refused_create, 0.5, refresh_and_create_elsewhere)
    dag_id = f"store_reuse_after_wait_{mode_id(deferrable)}"
    dag_file = store_dag(
        write_dag,
        dag_id,
        f"{tmp_path}/r.csv",
        deferrable=deferrable,
        poll_interval=0.2,
        data_poll_interval=1.0,
        data_timeout=30,
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.state == "success", whole_log(result)
    [run] = simulator.report_runs()
    assert made == [run["id"]]
    assert [r.status for r in of_kind(simulator, "create")] == [400, 200]  # the operator's refused one, the other's
    assert result.stored_run_id("store") == run["id"]
    assert f"Reusing Stripe report run {run['id']}" in whole_log(result)
    assert (tmp_path / "r.csv").read_bytes() == simulator.result_content(run["id"])


def test_without_wait_for_data_a_refused_interval_fails_and_names_wait_for_data(
    write_dag, start_sim, tmp_path: Path
) -> None:
    simulator = start_sim(data_available_end=MAR_2 - 6 * HOUR)
    dag_file = store_dag(write_dag, "store_no_wait", f"{tmp_path}/r.csv", wait_for_data=False)

    result = run_dag(dag_file, "store_no_wait", logical_date=DAY)

    assert result.task_state("store") == "failed"
    log = whole_log(result)
    assert "is only available through 2024-03-01 18:00:00 UTC" in log
    assert "Stripe has not prepared this interval's data yet" in log
    assert "Set wait_for_data=True to wait for it in this task." in log
    assert kinds(simulator) == ["list", "create"]
    assert simulator.report_runs() == []
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("deferrable", MODES, ids=MODE_IDS)
def test_an_interval_before_data_available_start_fails_at_once_even_with_wait_for_data(
    write_dag, start_sim, tmp_path: Path, deferrable: bool
) -> None:
    simulator = start_sim(data_available_start=MAR_1 + 10 * 24 * HOUR)
    dag_id = f"store_too_old_{mode_id(deferrable)}"
    dag_file = store_dag(
        write_dag, dag_id, f"{tmp_path}/r.csv", wait_for_data=True, deferrable=deferrable, data_poll_interval=60
    )
    started = time.monotonic()

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert time.monotonic() - started < 30  # far below data_poll_interval: it never slept
    assert result.task_state("store") == "failed"
    log = whole_log(result)
    assert "is only available starting from 2024-03-11 00:00:00 UTC" in log
    assert "will never become available" in log
    assert "StripeReportDataAvailableSensor" not in log
    assert TRIGGER_RAN not in log
    assert kinds(simulator) == ["list", "create"]
    assert simulator.report_runs() == []


@pytest.mark.parametrize("deferrable", MODES, ids=MODE_IDS)
def test_data_that_does_not_arrive_within_data_timeout_fails_with_what_was_last_seen(
    write_dag, start_sim, tmp_path: Path, deferrable: bool
) -> None:
    simulator = start_sim(data_available_end=MAR_2 - 6 * HOUR)
    dag_id = f"store_data_timeout_{mode_id(deferrable)}"
    dag_file = store_dag(
        write_dag,
        dag_id,
        f"{tmp_path}/r.csv",
        deferrable=deferrable,
        data_poll_interval=0.4,
        data_timeout=2,
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.task_state("store") == "failed"
    [refused] = of_kind(simulator, "create")
    checks = of_kind(simulator, "report_type")
    assert len(checks) >= 3
    assert 1.8 <= checks[-1].timestamp - refused.timestamp < 4, "it gave up at data_timeout, not before or long after"
    assert simulator.report_runs() == []
    assert (
        "Stripe's data for balance.summary.1 did not reach interval_end 2024-03-02 00:00:00 UTC within "
        "data_timeout (2 s); last data_available_end: 2024-03-01 18:00:00 UTC." in whole_log(result)
    )


@pytest.mark.parametrize("deferrable", MODES, ids=MODE_IDS)
def test_a_data_wait_that_never_got_an_answer_says_so_when_it_times_out(
    write_dag, start_sim, tmp_path: Path, deferrable: bool
) -> None:
    # Every report-type read fails (transient 503s): the wait keeps going, then names no date.
    simulator = start_sim(
        data_available_end=MAR_2 - 6 * HOUR, extra={"max_retries": 0}, faults=[Fault("report_type", "503")]
    )
    dag_id = f"store_data_no_answer_{mode_id(deferrable)}"
    dag_file = store_dag(
        write_dag, dag_id, f"{tmp_path}/r.csv", deferrable=deferrable, data_poll_interval=0.4, data_timeout=2
    )

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.task_state("store") == "failed"
    assert len(of_kind(simulator, "report_type")) >= 2
    assert {r.status for r in of_kind(simulator, "report_type")} == {503}
    assert simulator.report_runs() == []
    assert (
        "Stripe's data for balance.summary.1 did not reach interval_end 2024-03-02 00:00:00 UTC within "
        "data_timeout (2 s); last data_available_end: no answer." in whole_log(result)
    )


# ---------------------------------------------------------------------------------------------
# A failed report run


@pytest.mark.parametrize("deferrable", MODES, ids=MODE_IDS)
def test_a_failed_report_run_fails_the_task_with_stripes_message_and_stores_nothing(
    write_dag, start_sim, tmp_path: Path, deferrable: bool
) -> None:
    simulator = start_sim(run_delay=0.5, fail_report_types=["balance.summary.1"])
    dag_id = f"store_failed_{mode_id(deferrable)}"
    dag_file = store_dag(write_dag, dag_id, f"{tmp_path}/r.csv", deferrable=deferrable, poll_interval=0.2)

    result = run_dag(dag_file, dag_id, logical_date=DAY)

    assert result.task_state("store") == "failed"
    [run] = simulator.report_runs()
    assert run["status"] == "failed"
    assert f"Stripe report run {run['id']} (balance.summary.1) failed: {DEFAULT_FAILURE_MESSAGE}" in whole_log(result)
    # Nothing in XCom: a retry finds runs by the duplicate lookup (and makes a new one, this one failed).
    assert not [key for key in result.xcoms if key[0] == "store" and key[2] != "pipeline_outlets"]  # Airflow 2 lineage
    assert "file_contents" not in kinds(simulator)
    assert not (tmp_path / "r.csv").exists()


# ---------------------------------------------------------------------------------------------
# Secrets: the key is never in a trigger's kwargs, nor in anything the DAG run kept

CANARY = "sk_test_StoreOperatorCanary8Vb3Nm6Qw1Er"
CANARY_CORE = "StoreOperatorCanary8Vb3"


def _deferred(call: Callable[[], Any]) -> Any:
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 2
        from airflow.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        call()
    return deferred.value


def test_both_triggers_this_operator_defers_to_hold_no_key(start_sim, tmp_path: Path) -> None:
    from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator

    simulator = start_sim(api_key=CANARY, data_available_end=MAR_2 - 6 * HOUR, run_delay=3600.0)
    pushed: dict[str, Any] = {}

    def xcom_push(key: str, value: Any) -> None:
        pushed[key] = value

    # Just what the operator reads of its task instance: the idempotency key's parts and xcom_push.
    ti = types.SimpleNamespace(
        dag_id="secrets", run_id="manual__1", task_id="store", map_index=-1, try_number=1, xcom_push=xcom_push
    )
    context: dict[str, Any] = {
        "ti": ti,
        "data_interval_start": DAY - dt.timedelta(days=1),
        "data_interval_end": DAY,
    }
    operator = StripeReportToStorageOperator(
        task_id="store",
        report_type="balance.summary.1",
        destination=str(tmp_path / "r.csv"),
        deferrable=True,
        poll_interval=0.1,
        data_poll_interval=0.1,
    )

    data_wait = _deferred(lambda: operator.execute(context))
    simulator.set_data_available_end(MAR_2)
    run_wait = _deferred(lambda: operator.execute_after_data(context, {"status": "available"}))

    assert (data_wait.method_name, run_wait.method_name) == ("execute_after_data", "execute_complete")
    assert [type(d.trigger).__name__ for d in (data_wait, run_wait)] == [
        "StripeReportDataAvailableTrigger",
        "StripeReportRunTrigger",
    ]
    [run] = simulator.report_runs()
    assert pushed == {}  # no run id XCom: the trigger's kwargs name the run
    assert run_wait.trigger.report_run_id == run["id"]
    serialized = [d.trigger.serialize() for d in (data_wait, run_wait)]
    for _classpath, kwargs in serialized:
        assert all(v is None or isinstance(v, (str, int, float)) for v in kwargs.values()), kwargs
    text = json.dumps([serialized, [(d.method_name, d.kwargs) for d in (data_wait, run_wait)]], default=str)
    assert CANARY_CORE not in text
    assert all(r.authorization_present for r in simulator.requests())  # the key was in use all along


def test_a_deferrable_run_through_both_waits_keeps_no_key(
    write_dag, start_sim, after_first, tmp_path: Path, airflow_db: None
) -> None:
    simulator = start_sim(api_key=CANARY, data_available_end=MAR_2 - 6 * HOUR, run_delay=0.5)
    after_first(simulator, refused_create, 0.3, lambda: simulator.set_data_available_end(MAR_2))
    dag_file = store_dag(
        write_dag,
        "store_secrets",
        f"{tmp_path}/r.csv",
        deferrable=True,
        poll_interval=0.2,
        data_poll_interval=0.2,
    )

    result = run_dag(dag_file, "store_secrets", logical_date=DAY)

    assert result.state == "success", whole_log(result)
    assert whole_log(result).count(TRIGGER_RAN) == 2  # the data wait and the run wait both deferred
    kept = {"log_text": result.log_text, **{f"log try {t.try_number}": t.log for t in result.tries}}
    kept.update({f"xcom {k}": json.dumps(v, default=str) for k, v in result.xcoms.items()})
    kept.update({f"rendered {k}": json.dumps(v, default=str) for k, v in result.rendered_fields.items()})
    assert [where for where, text in kept.items() if CANARY_CORE in text] == []
    home = Path(os.environ["AIRFLOW_HOME"])
    assert [f.name for f in sorted(home.glob("airflow.db*")) if CANARY_CORE.encode() in f.read_bytes()] == []
