"""scripts/e2e's DAG: one deferrable StripeReportToStorageOperator per daily UTC interval.

Short waits so a 30-interval backfill with faults fits in minutes on two cores: polls every 10 s
(a trigger that fires within ~5 s of deferring races Airflow's own task exit) and retries after
10 s, so a task lost with a killed worker costs the heartbeat timeout plus 10 s.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

REPORTS_DIR = os.environ.get("E2E_REPORTS_DIR", "/tmp/e2e-reports")

with DAG(
    dag_id="e2e_stripe_backfill",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    # Unpaused for the backfill, the scheduler would also run the latest interval: the end date
    # keeps every report run at the simulator one of the backfill's.
    end_date=pendulum.datetime(2024, 12, 31, tz="UTC"),
    catchup=False,
    max_active_runs=10,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=10)},
    tags=["stripe", "e2e"],
):
    StripeReportToStorageOperator(
        task_id="store_report",
        report_type="balance.summary.1",
        parameters={"currency": "usd"},
        destination=REPORTS_DIR + "/{{ data_interval_start | ds }}.csv",
        deferrable=True,
        poll_interval=10,
        data_poll_interval=10,
    )
