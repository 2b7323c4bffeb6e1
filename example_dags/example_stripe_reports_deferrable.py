"""Several Stripe report types per day, waiting in the triggerer (deferrable) instead of a worker.

One mapped task instance per report type: each creates its run, waits for it without holding a
worker slot, and downloads its CSV. Needs a running triggerer (``airflow triggerer``) in
production; ``dag.test()`` runs the triggers inline.

Environment knobs: ``STRIPE_REPORTS_DIR`` (default ``/tmp/stripe-reports``),
``STRIPE_EXAMPLE_POKE_SECONDS`` (poll interval, default 60).
"""

from __future__ import annotations

import os

import pendulum

from airflow_provider_reportruns.operators.report_run import (
    StripeCreateReportRunOperator,
    StripeDownloadReportRunOperator,
)
from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.10+
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

REPORT_TYPES = ["balance.summary.1", "payouts.summary.1", "balance_change_from_activity.summary.1"]
REPORTS_DIR = os.environ.get("STRIPE_REPORTS_DIR", "/tmp/stripe-reports")
POKE_SECONDS = float(os.environ.get("STRIPE_EXAMPLE_POKE_SECONDS", "60"))

with DAG(
    dag_id="example_stripe_reports_deferrable",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["stripe", "example"],
) as dag:
    create = StripeCreateReportRunOperator.partial(task_id="create_report_run").expand(report_type=REPORT_TYPES)
    wait = StripeReportRunSensor.partial(
        task_id="wait_for_report_run", deferrable=True, poke_interval=POKE_SECONDS, timeout=6 * 3600
    ).expand(report_run_id=create.output)
    StripeDownloadReportRunOperator.partial(
        task_id="download_report",
        destination=REPORTS_DIR + "/{report_type}/{{ data_interval_start | ds }}.csv",
    ).expand(report_run_id=wait.output)
