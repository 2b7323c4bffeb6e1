"""Trivial DAG for tests/test_harness.py: XComs, a mapped task, templates, logs and prints."""

from __future__ import annotations

import datetime as dt
import logging

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.operators.python import PythonOperator

log = logging.getLogger(__name__)


def _push(day: str, interval_start: str) -> dict[str, str]:
    log.info("logged by a module logger: %s", day)
    print("printed by the task")
    return {"day": day, "interval_start": interval_start}


def _times_ten(n: int) -> int:
    return n * 10


with DAG(
    "harness_xcom",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    schedule=None,
    catchup=False,
):
    PythonOperator(
        task_id="push",
        python_callable=_push,
        op_kwargs={"day": "{{ ds }}", "interval_start": "{{ data_interval_start }}"},
    )
    PythonOperator.partial(task_id="mapped", python_callable=_times_ten).expand(op_args=[[1], [2], [3]])
