"""Trivial DAGs for tests/test_harness.py: which data interval does a manual dag.test() run get?"""

from __future__ import annotations

import datetime as dt

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG, CronDataIntervalTimetable
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.operators.python import PythonOperator
    from airflow.timetables.interval import CronDataIntervalTimetable


def _interval(rendered: str, data_interval_start: object, data_interval_end: object) -> dict[str, str]:
    return {"rendered": rendered, "start": str(data_interval_start), "end": str(data_interval_end)}


for dag_id, schedule in (
    ("harness_cron_data_interval", CronDataIntervalTimetable("@daily", timezone="UTC")),
    ("harness_daily_preset", "@daily"),
):
    with DAG(
        dag_id,
        start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        schedule=schedule,
        catchup=False,
    ):
        PythonOperator(
            task_id="interval",
            python_callable=_interval,
            op_kwargs={"rendered": "{{ data_interval_start }}/{{ data_interval_end }}"},
        )
