"""Trivial DAG for tests/test_harness.py: a task that fails on both of its tries."""

from __future__ import annotations

import datetime as dt

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.operators.python import PythonOperator


def _explode() -> None:
    raise ValueError("harness-failure-marker: the report run exploded")


with DAG(
    "harness_failing",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    schedule=None,
    catchup=False,
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=0)},
):
    boom = PythonOperator(task_id="boom", python_callable=_explode)
    never = PythonOperator(task_id="never", python_callable=lambda: None)
    boom >> never
