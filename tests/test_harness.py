"""The dag.test() harness works on the installed Airflow (scripts/test runs this on 3.3.2 and 2.11.2)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from airflow_harness import airflow_major, run_dag

DAGS = Path(__file__).parent / "dags"
DAY = dt.datetime(2024, 3, 2, tzinfo=dt.timezone.utc)
AIRFLOW_3 = airflow_major() >= 3

# Import preamble for DAG files written by tests; the same lines work on both versions.
PREAMBLE = """\
from __future__ import annotations
import datetime as dt
try:
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG, BaseHook
except ImportError:
    from airflow import DAG
    from airflow.hooks.base import BaseHook
    from airflow.operators.python import PythonOperator
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
"""


def test_python_operator_xcoms_rendered_fields_and_logs_are_collected() -> None:
    result = run_dag(DAGS / "harness_xcom.py", "harness_xcom", logical_date=DAY)

    assert result.state == "success"
    assert result.task_state("push") == "success"
    assert result.xcom("push") == {"day": "2024-03-02", "interval_start": "2024-03-02 00:00:00+00:00"}
    assert result.rendered("push")["op_kwargs"] == {
        "day": "2024-03-02",
        "interval_start": "2024-03-02 00:00:00+00:00",
    }
    assert result.map_indexes("mapped") == [0, 1, 2]
    assert [result.xcom("mapped", map_index=i) for i in (0, 1, 2)] == [10, 20, 30]
    assert result.rendered("mapped", map_index=1)["op_args"] == [2]
    assert "logged by a module logger: 2024-03-02" in result.log("push")
    assert "printed by the task" in result.log("push")
    # Each try's log holds only that task instance's lines.
    assert "printed by the task" not in result.log("mapped", map_index=1)
    assert "Returned value was: 20" in result.log("mapped", map_index=1)
    assert "printed by the task" in result.log_text


def test_deferrable_sensor_runs_its_trigger_inline() -> None:
    started = time.monotonic()
    result = run_dag(DAGS / "harness_deferrable.py", "harness_deferrable", logical_date=DAY)
    elapsed = time.monotonic() - started

    assert result.state == "success"
    assert result.task_states == {("wait", -1): "success", ("after", -1): "success"}
    assert elapsed >= 1.5, "the DateTimeTrigger waits ~2 s; finishing sooner means it did not run"
    log = result.log("wait")
    assert "[DAG TEST] running trigger in line" in log
    assert "DateTimeTrigger" in log
    assert "[DAG TEST] Trigger completed" in log
    # Deferring and resuming is one try; the trigger's lines are in that try's log.
    assert [t.try_number for t in result.tries if t.task_id == "wait"] == [1]
    assert result.xcom("after") == "done"


def test_failing_task_fails_the_run_and_each_try_has_its_error_in_the_log() -> None:
    result = run_dag(DAGS / "harness_failing.py", "harness_failing", logical_date=DAY)

    assert result.state == "failed"
    assert result.task_state("boom") == "failed"
    assert result.task_state("never") == "upstream_failed"
    assert result.try_numbers[("boom", -1)] == 2
    logs = result.logs("boom")
    assert len(logs) == 2
    for log in logs:
        assert "ValueError: harness-failure-marker: the report run exploded" in log
    assert result.log("boom", try_number=1) == logs[0]
    with pytest.raises(KeyError):
        result.xcom("boom")


def test_cron_data_interval_timetable_gives_the_previous_day_on_both_versions() -> None:
    result = run_dag(DAGS / "harness_intervals.py", "harness_cron_data_interval", logical_date=DAY)

    previous_day = (dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc), DAY)
    assert result.data_interval == previous_day
    assert result.logical_date == DAY  # the interval END, for a manual run at midnight
    assert result.xcom("interval")["rendered"] == "2024-03-01 00:00:00+00:00/2024-03-02 00:00:00+00:00"


def test_daily_preset_interval_is_zero_length_on_airflow_3_only() -> None:
    result = run_dag(DAGS / "harness_intervals.py", "harness_daily_preset", logical_date=DAY)

    if AIRFLOW_3:
        # 3.x: "@daily" is a CronTriggerTimetable -- no data interval, start == end == logical date.
        assert result.data_interval == (DAY, DAY)
        assert result.xcom("interval")["rendered"] == "2024-03-02 00:00:00+00:00/2024-03-02 00:00:00+00:00"
    else:
        # 2.11: "@daily" still means CronDataIntervalTimetable.
        assert result.data_interval == (dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc), DAY)


def test_dag_from_a_tmp_folder_with_conf_and_a_rerun_of_the_same_date(write_dag) -> None:
    dag_file = write_dag(
        "conf_echo.py",
        PREAMBLE
        + """
with DAG("conf_echo", start_date=START, schedule=None):
    PythonOperator(task_id="echo", python_callable=lambda dag_run: dag_run.conf["n"])
""",
    )

    first = run_dag(dag_file, "conf_echo", logical_date=DAY, conf={"n": 1})
    second = run_dag(dag_file, "conf_echo", logical_date=DAY, conf={"n": 2})

    # Both versions replace the earlier run of the same logical date; the snapshot survives.
    assert (first.xcom("echo"), second.xcom("echo")) == (1, 2)
    assert second.conf == {"n": 2}


def test_connection_from_env_reaches_the_task_and_captured_logs_are_not_masked(write_dag, airflow_conn) -> None:
    dag_file = write_dag(
        "conn_probe.py",
        PREAMBLE
        + """
import logging

def _probe():
    conn = BaseHook.get_connection("stripe_probe")
    logging.getLogger(__name__).info("password is %s", conn.password)
    return [conn.conn_type, conn.host, conn.extra_dejson]

with DAG("conn_probe", start_date=START, schedule=None):
    PythonOperator(task_id="probe", python_callable=_probe)
""",
    )
    airflow_conn(
        "stripe_probe",
        conn_type="stripe",
        host="http://127.0.0.1:9",
        password="sk_test_harness_probe_4242",
        extra={"stripe_account": "acct_1"},
    )

    result = run_dag(dag_file, "conn_probe", logical_date=DAY)

    assert result.xcom("probe") == ["stripe", "http://127.0.0.1:9", {"stripe_account": "acct_1"}]
    # Neither version masks secrets in what dag.test() logs, so a secret scan over these logs
    # sees exactly what the code emitted. If this starts failing, masking appeared and secret-scan
    # tests must search the raw output another way.
    assert "password is sk_test_harness_probe_4242" in result.log("probe")


def test_naive_logical_date_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run_dag(DAGS / "harness_xcom.py", "harness_xcom", logical_date=dt.datetime(2024, 3, 2))


def test_unknown_dag_id_reports_what_the_file_contains(write_dag) -> None:
    dag_file = write_dag("broken.py", PREAMBLE + "\nraise RuntimeError('broken-dag-marker')\n")

    with pytest.raises(LookupError, match="broken-dag-marker"):
        run_dag(dag_file, "missing", logical_date=DAY)
