"""Trivial DAG for tests/test_harness.py: a deferrable sensor whose trigger must run inline."""

from __future__ import annotations

import datetime as dt

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.operators.python import PythonOperator
    from airflow.sensors.date_time import DateTimeSensorAsync

with DAG(
    "harness_deferrable",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    schedule=None,
    catchup=False,
):
    # Rendered when the task starts, so the trigger really has ~2 s to wait.
    wait = DateTimeSensorAsync(
        task_id="wait",
        target_time="{{ macros.datetime.utcnow() + macros.timedelta(seconds=2) }}",
    )
    after = PythonOperator(task_id="after", python_callable=lambda: "done")
    wait >> after
